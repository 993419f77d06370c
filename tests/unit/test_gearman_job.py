"""Job.alive: a job can be answered only on the connection it came in on, while that
connection is up (pygen/gearman/job.py); once it dropped gearmand has re-queued the job."""
from pygen.gearman.connection import Connection
from pygen.gearman.job import Job
from pygen.gearman.link import Link


def job_on(state):
    link = Link(Connection("127.0.0.1:1", 1.0, 1.0))
    link.state = state
    return link, Job(None, link, b"H:x:1", b"fn", b"u", b"w")


def test_alive_while_its_link_is_up():
    for state in ("awake", "sleeping"):
        assert job_on(state)[1].alive
    for state in ("down", "connecting"):
        assert not job_on(state)[1].alive


def test_not_alive_after_a_reconnection():
    link, job = job_on("awake")
    link.gen += 1  # dropped and connected again: another connection
    assert not job.alive and job_on("awake")[1].alive
