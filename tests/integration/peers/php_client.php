<?php
// php-gearman (libgearman) client: one doBackground per line of stdin (the workload), to
// FUNCTION; prints each job's handle. Usage: php php_client.php HOST PORT FUNCTION < workloads
[$_, $host, $port, $function] = $argv;
$c = new GearmanClient();
$c->addServer($host, (int)$port);
while (($line = fgets(STDIN)) !== false) {
    $handle = $c->doBackground($function, rtrim($line, "\n"));
    if ($c->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "doBackground: " . $c->error() . "\n");
        exit(1);
    }
    echo $handle, "\n";
}
