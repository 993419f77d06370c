# Gearman::Worker (Debian libgearman-perl, the Perl server's own worker): serves PREFIX_rev
# (the workload reversed), PREFIX_double (2 * the integer workload) and PREFIX_fail (dies:
# WORK_FAIL). Usage: perl perl_worker.pl HOST:PORT PREFIX
use strict;
use warnings;
use Gearman::Worker;

my ($server, $prefix) = @ARGV;
my $w = Gearman::Worker->new(job_servers => [$server]);
$w->register_function("${prefix}_rev" => sub { scalar reverse $_[0]->arg });
$w->register_function("${prefix}_double" => sub { 2 * $_[0]->arg });
$w->register_function("${prefix}_fail" => sub { die "failed on purpose\n" });
$w->work while 1;
