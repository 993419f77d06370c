"""The MySQL/MariaDB side: the function catalog, its SQL, the generated files, installation, the built library."""
