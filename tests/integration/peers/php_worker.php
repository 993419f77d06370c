<?php
// php-gearman (libgearman) worker: serves PREFIX_rev (the workload reversed), PREFIX_double
// (2 * the integer workload) and PREFIX_fail (WORK_FAIL). Usage: php php_worker.php HOST PORT PREFIX
[$_, $host, $port, $prefix] = $argv;
$w = new GearmanWorker();
$w->addServer($host, (int)$port);
$w->addFunction("{$prefix}_rev", function ($job) { return strrev($job->workload()); });
$w->addFunction("{$prefix}_double", function ($job) { return (string)(2 * (int)$job->workload()); });
$w->addFunction("{$prefix}_fail", function ($job) { $job->sendFail(); return ""; });
while (true) {
    if (!$w->work()) {
        fwrite(STDERR, "work: " . $w->error() . "\n");
        exit(1);
    }
}
