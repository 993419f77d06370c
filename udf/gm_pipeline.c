/*
 * gm_pipeline.c -- pipelined single jobs, with failover, parking and rescue (see
 * gm_pipeline.h).
 */
#include "gm_pipeline.h"

#include <stdlib.h>
#include <string.h>

#include "gm_pick.h"
#include "gm_pipe.h"
#include "gm_stats.h"

typedef struct gm_submit {
    const gm_config *cfg;
    gm_jobq out;         /* to send, oldest first: jobs rescued from failed connections, then this one */
    const char *mine;    /* this call's packet, to tell it from the rescued ones */
    size_t mine_len;
    unsigned refused;    /* refusals read during this call */
    int gone;            /* the server in use kept jobs unanswered past do_timeout_ms */
    gm_error *note;      /* the last refusal, described */
    gm_error trouble;    /* jobs without a handle, protocol violations: "; "-separated, for the note */
    const char *server;  /* name of the server in use, for the note */
    int no_handle;       /* the server in use sent a JOB_CREATED without a handle: broken, backed off */
    gm_conn *conn;       /* the connection in use */
} gm_submit;

static int gm_submit_on_reply(void *vctx, const gm_packet *pkt, const gm_reply *r, gm_error *e)
{
    gm_submit *sub = vctx;
    if (r->kind == GM_REPLY_REFUSED) {
        sub->refused++;
        if (sub->refused == 1)
            gm_error_set(sub->note, "job %s refused by gearmand %s: %s", r->unique, sub->server, r->why.text);
        else
            gm_error_set(sub->note, "%u jobs refused, the last one %s by gearmand %s: %s", sub->refused, r->unique,
                         sub->server, r->why.text);
    } else if (r->kind == GM_REPLY_NO_HANDLE) {
        /* Not sent again: it may be queued there. Its call returned already: the reader says it. */
        sub->no_handle = 1;
        gm_error_add(&sub->trouble, "job %s not confirmed by gearmand %s: %s (it may or may not be queued there)",
                     r->unique, sub->server, r->why.text);
    } else if (r->kind == GM_REPLY_OTHER && pkt->type != GM_NOOP) {
        return gm_pipe_violation(sub->conn, e, "unexpected %s", gm_proto_type_name(pkt->type));
    }
    return GM_OK;
}

/* Send sub->out on c, oldest first, keeping at most pipeline_window jobs unanswered. */
static int gm_submit_send(gm_conn *c, gm_submit *sub, gm_error *e)
{
    const gm_config *cfg = sub->cfg;
    size_t max_reply = gm_config_max_reply(cfg);
    unsigned keep = (unsigned)cfg->pipeline_window - 1;
    unsigned nread;
    c->timed_out = 0;
    sub->conn = c;
    /* Replies that are already there first: they make room and report earlier refusals. */
    if (gm_pipe_read(c, max_reply, -1, gm_submit_on_reply, sub, &nread, e) != GM_OK)
        return GM_ERR;
    if (gm_pipe_count(c) && gm_now_us() - c->pending->progress_us >= (int64_t)cfg->do_timeout_ms * 1000) {
        sub->gone = 1; /* its jobs go elsewhere, and no fresh connection to it is tried */
        return gm_error_set(e, "%u jobs without an answer for do_timeout_ms (%d ms)", gm_pipe_count(c),
                            cfg->do_timeout_ms);
    }
    const char *p;
    size_t n;
    while ((n = gm_jobq_front(&sub->out, &p)) != 0) {
        if (gm_pipe_drain(c, keep, n, cfg, gm_submit_on_reply, sub, e) != GM_OK ||
            gm_pipe_send(c, p, n, e) != GM_OK)
            return GM_ERR;
        gm_jobq_pop(&sub->out);
    }
    return gm_conn_flush(c, gm_deadline(cfg->io_timeout_ms), e);
}


/* Is this call's job among those left to send? (A rescued job with the very same bytes
 * would be the same job sent twice: telling them apart does not matter.) */
static int gm_submit_mine_left(const gm_submit *sub)
{
    size_t pos = sub->out.pos;
    for (unsigned i = 0; i < sub->out.count; i++) {
        size_t n = gm_jobq_packet_len(sub->out.buf + pos);
        if (n == sub->mine_len && memcmp(sub->out.buf + pos, sub->mine, n) == 0)
            return 1;
        pos += n;
    }
    return 0;
}

#define GM_SUBMIT_BUSY 1 /* the server is silent: its connection is parked with its jobs */

/* Try one server: a pooled connection (then one fresh one if that had died while idle).
 * GM_OK, GM_SUBMIT_BUSY, or GM_ERR (the server is gone; its jobs were taken off). */
static int gm_submit_on(gm_server *s, gm_submit *sub, gm_error *e)
{
    const gm_config *cfg = sub->cfg;
    sub->server = s->name;
    sub->gone = 0;
    sub->no_handle = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        int reused = 0;
        gm_conn *c = gm_server_checkout(s, cfg->connect_timeout_ms, 0, &reused, e);
        if (c == NULL)
            return GM_ERR;
        if (gm_submit_send(c, sub, e) == GM_OK) {
            gm_server_checkin(s, c);
            if (sub->no_handle) /* its next jobs go to the next server, as after a failure */
                gm_server_mark_down(s, "JOB_CREATED without a job handle", cfg->backoff_ms);
            else
                gm_server_mark_up(s);
            return GM_OK;
        }
        if (c->timed_out && !c->broke_protocol && c->wpos == c->wlen && gm_pipe_count(c)) {
            /* Silent, not gone: re-sending its jobs could run them twice. Its next user
             * reads their replies (or rescues them once it is surely gone). */
            c->timed_out = 0;
            gm_server_checkin(s, c);
            return GM_SUBMIT_BUSY;
        }
        int timed_out = c->timed_out;
        if (c->broke_protocol) /* seen even when the jobs then go through: the server is broken */
            gm_error_add(&sub->trouble, "gearmand %s broke the protocol: %s (connection dropped, %u unanswered jobs "
                         "sent again)", s->name, e->text, gm_pipe_count(c));
        gm_pipe_rescue(c, &sub->out);
        gm_conn_close(c);
        if (!reused || timed_out || sub->gone) /* a silent server would cost a second timeout */
            return GM_ERR;
    }
    return GM_ERR;
}

/* s failed: the jobs waiting on its idle connections will not be answered either. */
static void gm_submit_take_idle(gm_server *s, gm_submit *sub)
{
    gm_conn *c;
    while ((c = gm_server_take_owing(s)) != NULL) {
        gm_pipe_rescue(c, &sub->out);
        gm_conn_close(c);
    }
}

/* s failed with why (rc: GM_ERR or GM_SUBMIT_BUSY): noted, in back-off; when it is gone,
 * so are the jobs on its idle connections, which go with this call's. */
static void gm_submit_failed(gm_submit *sub, gm_pick *pk, gm_server *s, int rc, const gm_error *why)
{
    gm_pick_failed(pk, s, why, 1);
    if (rc == GM_ERR)
        gm_submit_take_idle(s, sub);
}

/* Send sub->out on the function's servers. First the usable ones in list order; then,
 * only when jobs taken off a failed connection are left, the servers skipped for back-off
 * too, rather than drop the jobs. Each server is tried once, so a call waits at most
 * io_timeout_ms (and a connect) per server, even when every server is silent: a trigger
 * holds its row locks meanwhile, and a silent server's parked jobs are read later. */
static void gm_submit_failover(gm_submit *sub, gm_pick *pk)
{
    int tried[GM_LIST_MAX] = {0};
    gm_server *s;
    gm_error why;
    while (sub->out.count && (s = gm_pick_next(pk)) != NULL) {
        tried[pk->next - 1] = 1;
        int rc = gm_submit_on(s, sub, &why);
        if (rc != GM_OK)
            gm_submit_failed(sub, pk, s, rc, &why);
    }
    for (unsigned i = 0; i < pk->rt->n && sub->out.count; i++) {
        if (tried[i] || !(sub->out.count > 1 || !gm_submit_mine_left(sub)))
            continue;
        s = pk->rt->servers[i];
        int rc = gm_submit_on(s, sub, &why);
        if (rc != GM_OK)
            gm_submit_failed(sub, pk, s, rc, &why);
    }
}

int gm_pipeline_submit(const gm_config *cfg, unsigned type, const char *fn, size_t fn_len, const char *unique,
                       size_t unique_len, const char *workload, size_t workload_len, gm_error *note, gm_error *e)
{
    gm_submit sub;
    memset(&sub, 0, sizeof sub);
    gm_error_clear(note);
    sub.note = note;
    sub.cfg = cfg;
    gm_slice args[3] = {{fn, fn_len}, {unique, unique_len}, {workload, workload_len}};
    const char *why = NULL;
    size_t size = gm_proto_packet_size(args, 3);
    char *pkt = size ? malloc(size) : NULL;
    if (pkt == NULL || gm_proto_encode(pkt, size, GM_MAGIC_REQ, type, args, 3, &why) != size ||
        gm_jobq_push(&sub.out, pkt, size) != GM_OK) {
        free(pkt);
        gm_jobq_free(&sub.out);
        return gm_error_set(e, "%s", why ? why : "out of memory");
    }
    sub.mine = pkt;
    sub.mine_len = size;
    gm_stats_add(GM_STAT_JOBS, 1);

    gm_pick pk;
    gm_pick_begin(&pk, cfg, fn, fn_len);
    gm_submit_failover(&sub, &pk);
    int rc = GM_OK;
    if (sub.out.count) {
        unsigned lost = sub.out.count - (unsigned)gm_submit_mine_left(&sub);
        gm_pick_error(&pk, e);
        if (lost) {
            gm_stats_add(GM_STAT_LOST, lost);
            gm_error_prefix(e, "%u unconfirmed jobs lost (no server took them): ", lost);
        }
        /* Even when this job was sent, a call that lost others' jobs fails: the loss is seen. */
        rc = GM_ERR;
    }
    if (sub.trouble.text[0])
        gm_error_add(note, "%s", sub.trouble.text);
    gm_pick_end(&pk);
    free(pkt);
    gm_jobq_free(&sub.out);
    return rc;
}
