/*
 * service_watch.c -- authzed.api.v1.WatchService.Watch: a server stream of
 * the changes committed after optional_start_cursor (or after the head at
 * the time of the call), in revision order.
 *
 * Event-driven (svc_stream_start): a waiting stream costs memory, not a
 * worker or a handle.  Each step reads up to WATCH_REVISIONS revisions of
 * changes, or about WATCH_BATCH_BYTES of responses, with
 * pemba_watch_changes (one snapshot), queues the packed responses, sends
 * them (outside the snapshot, so a slow client never holds a read
 * transaction) one at a time while the call is writable, and goes on
 * until the client's queue is full (then the transport resumes it once
 * the client has read; the responses not sent yet wait in the queue) or
 * there is nothing new (then it waits for a revision event,
 * service_events.c).
 *
 * Each revision with matching changes is one response (a revision over
 * WATCH_RESPONSE_BYTES of updates is split, every part with the same
 * changes_through); writes that changed nothing send nothing.  A
 * response's changes_through is the revision of its changes: a client
 * restarting from it gets what followed, except the rest of a split
 * revision (restart from its last part).  With WATCH_KIND_INCLUDE_
 * CHECKPOINTS every revision is followed by a checkpoint response (as
 * SpiceDB), and an idle stream gets one every WATCH_CHECKPOINT_MS (the
 * step's wake-up timer, grpc_call_wake_after).  A revision's response
 * carries its write's optional_transaction_metadata.  The stream ends
 * when the client cancels, the deadline passes, the client stops reading
 * (stall timeout) or the server shuts down (UNAVAILABLE).
 */
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "api/struct_json.h"
#include "api/zedtoken.h"
#include "authzed/api/v1/watch_service.pb-c.h"
#include "util/error.h"
#include "util/xalloc.h"

#define WATCH_REVISIONS 64
/* A waiting stream also looks for changes this often, whatever the
 * revision events say: a missed event costs latency, never a change. */
#define WATCH_SAFETY_MS 30000
/* With WATCH_KIND_INCLUDE_CHECKPOINTS, a stream that sent nothing for this
 * long sends a checkpoint at the revision it has seen everything through
 * (the head): an idle stream still shows it is alive and current. */
#define WATCH_CHECKPOINT_MS 1000
/* One response per revision, as SpiceDB sends, unless its updates would
 * pass this size: then the revision goes out in several responses with
 * the same changes_through, each under it.  Below clients' usual 4 MiB
 * receive limit (SpiceDB fails the stream with RESOURCE_EXHAUSTED
 * instead), and below the transport's 4 MiB stream buffer cap minus the
 * 256 KiB a step may find queued (grpc.h). */
#define WATCH_RESPONSE_BYTES (3 * 1024 * 1024 + 512 * 1024)
/* A read stops at the end of the first revision that brings the queued
 * responses to this size (the transport's writable mark): a backlog is
 * read as fast as the client takes it, not 64 revisions at once. */
#define WATCH_BATCH_BYTES (256 * 1024)

typedef struct packed {
	uint8_t *data;
	size_t len;
} packed;

typedef struct watch_queue {
	pemba_db *db;
	unsigned kinds; /* PEMBA_WATCH_* */
	packed *items;
	size_t n, cap;
	size_t sent;        /* items[0..sent) have been sent */
	size_t items_bytes; /* their total size */
	/* The updates of the revision being collected: core delivers a big
	 * revision in chunks of PEMBA_WATCH_CHUNK (more_in_revision), one
	 * response carries them all. */
	Authzed__Api__V1__RelationshipUpdate **ups;
	size_t nups, capups;
	size_t bytes; /* their packed size */
} watch_queue;

/* Packs the collected updates as one response for ev's revision (with
 * ev's schema_updated, is_checkpoint when `last`) and queues it. */
static void queue_response(watch_queue *q, const pemba_watch_event *ev,
                           bool last)
{
	Authzed__Api__V1__WatchResponse resp =
	    AUTHZED__API__V1__WATCH_RESPONSE__INIT;
	svc_zedtoken zt;
	resp.updates = q->ups;
	resp.n_updates = q->nups;
	resp.changes_through = svc_zedtoken_make(&zt, q->db, ev->revision);
	resp.schema_updated = last && ev->schema_updated != 0;
	resp.is_checkpoint = last && ev->is_checkpoint != 0;
	/* The write's optional_transaction_metadata, on the revision's
	 * (last) response; core stored it as JSON text. */
	if (last && ev->metadata)
		resp.optional_transaction_metadata =
		    api_struct_from_json(ev->metadata, strlen(ev->metadata));
	if (q->n == q->cap) {
		q->cap = q->cap ? 2 * q->cap : 16;
		q->items = xrealloc(q->items, q->cap * sizeof(*q->items));
	}
	packed *p = &q->items[q->n++];
	p->len = protobuf_c_message_get_packed_size(&resp.base);
	p->data = xmalloc(p->len + 1);
	protobuf_c_message_pack(&resp.base, p->data);
	q->items_bytes += p->len;
	if (resp.optional_transaction_metadata)
		api_struct_free(resp.optional_transaction_metadata);
	for (size_t i = 0; i < q->nups; i++) {
		svc_relationship_free(q->ups[i]->relationship);
		free(q->ups[i]);
	}
	q->nups = 0;
	q->bytes = 0;
}

/* Every change is reported as SpiceDB's Watch reports it: a relationship
 * written (created by CREATE or TOUCH, or its caveat or expiration
 * replaced by a TOUCH) is OPERATION_TOUCH -- never OPERATION_CREATE --
 * and a deleted one OPERATION_DELETE with the caveat and expiration it
 * had; core leaves out writes that changed nothing (a TOUCH of an
 * identical relationship, a DELETE of a missing one) and orders a
 * revision's TOUCHes before its DELETEs, as SpiceDB does. */
static int queue_event(void *ctx, const pemba_watch_event *ev)
{
	watch_queue *q = ctx;
	for (size_t i = 0; i < ev->nupdates; i++) {
		Authzed__Api__V1__RelationshipUpdate *u = xmalloc(sizeof(*u));
		authzed__api__v1__relationship_update__init(u);
		u->operation =
		    ev->updates[i].op == PEMBA_OP_DELETE
		        ? AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_DELETE
		        : AUTHZED__API__V1__RELATIONSHIP_UPDATE__OPERATION__OPERATION_TOUCH;
		u->relationship =
		    svc_relationship_to_proto(&ev->updates[i].rel);
		/* The update's size as a field of the response: tag,
		 * length, message. */
		size_t len = protobuf_c_message_get_packed_size(&u->base);
		size_t size = 1 + len;
		for (size_t v = len; v >= 0x80; v >>= 7)
			size++;
		size++;
		if (q->nups > 0 && q->bytes + size > WATCH_RESPONSE_BYTES)
			queue_response(q, ev, false);
		if (q->nups == q->capups) {
			q->capups = q->capups ? 2 * q->capups : 64;
			q->ups = xrealloc(q->ups, q->capups * sizeof(*q->ups));
		}
		q->ups[q->nups++] = u;
		q->bytes += size;
	}
	/* A revision's chunks come in one pemba_watch_changes call, one
	 * after another: the last one sends the response. */
	if (ev->more_in_revision)
		return 0;
	queue_response(q, ev, true);
	/* Enough for now: stop at this revision's end -- after its
	 * checkpoint, when checkpoints were asked for. */
	if ((q->kinds & PEMBA_WATCH_CHECKPOINTS) && !ev->is_checkpoint)
		return 0;
	return q->items_bytes >= WATCH_BATCH_BYTES;
}

static void queue_clear(watch_queue *q)
{
	for (size_t i = 0; i < q->n; i++)
		free(q->items[i].data);
	q->n = 0;
	q->sent = 0;
	q->items_bytes = 0;
	for (size_t i = 0; i < q->nups; i++) {
		svc_relationship_free(q->ups[i]->relationship);
		free(q->ups[i]);
	}
	q->nups = 0;
	q->bytes = 0;
}

static int kinds_from_proto(const Authzed__Api__V1__WatchRequest *m,
                            unsigned *kinds, pemba_error *err)
{
	*kinds = 0;
	for (size_t i = 0; i < m->n_optional_update_kinds; i++) {
		switch (m->optional_update_kinds[i]) {
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_RELATIONSHIP_UPDATES:
			*kinds |= PEMBA_WATCH_RELATIONSHIPS;
			break;
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_SCHEMA_UPDATES:
			*kinds |= PEMBA_WATCH_SCHEMA;
			break;
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_INCLUDE_CHECKPOINTS:
			*kinds |= PEMBA_WATCH_CHECKPOINTS;
			break;
		case AUTHZED__API__V1__WATCH_KIND__WATCH_KIND_UNSPECIFIED:
			*kinds |= PEMBA_WATCH_RELATIONSHIPS;
			break;
		default:
			return error_set(
			    err, PEMBA_EINVAL,
			    "invalid argument: unknown watch kind %d",
			    (int)m->optional_update_kinds[i]);
		}
	}
	if (*kinds == 0)
		*kinds = PEMBA_WATCH_RELATIONSHIPS;
	return 0;
}

/* A Watch stream between steps. */
typedef struct watch_state {
	struct svc_events *events;
	pemba_watch_filter wf;
	pemba_filter *filters;
	const char **prefixes; /* resource id prefix per filter, "" none */
	pemba_revision after;  /* every change through it has been sent */
	int64_t last_sent_ns;  /* when a response was last sent (monotonic) */
	watch_queue q;
} watch_state;

/* One step: send what was committed after `after` until the client's
 * queue is full or the time slice is over; with nothing new, wait for
 * the next revision event (and a slow safety timer). */
static grpc_step watch_step(grpc_call *call, pemba_db *db, void *arg)
{
	watch_state *ws = arg;
	int64_t began = svc_step_begin();
	ws->q.db = db;
	for (;;) {
		/* What an earlier read queued goes first, a response at a
		 * time while the client keeps up: a step never queues more
		 * than one response past the writable mark, so a big one
		 * stays under the transport's stream buffer cap. */
		while (ws->q.sent < ws->q.n) {
			if (!grpc_call_writable(call))
				return GRPC_STEP_MORE;
			packed *p = &ws->q.items[ws->q.sent++];
			if (grpc_call_send(call, p->data, p->len) < 0)
				return GRPC_STEP_DONE; /* the call is gone */
			ws->last_sent_ns = svc_step_begin();
		}
		queue_clear(&ws->q);
		if (svc_step_expired(began))
			return GRPC_STEP_MORE;
		uint64_t gen = svc_events_generation(ws->events);
		pemba_revision last = ws->after;
		pemba_error err = {0};
		if (pemba_watch_changes(db, ws->after, &ws->wf, WATCH_REVISIONS,
		                        queue_event, &ws->q, &last, &err) < 0) {
			svc_finish_error(call, &err);
			return GRPC_STEP_DONE;
		}
		if (last > ws->after) {
			ws->after = last;
			continue; /* send it; there may be more right away */
		}
		int wait_ms = WATCH_SAFETY_MS;
		if (ws->wf.kinds & PEMBA_WATCH_CHECKPOINTS) {
			/* Idle: a checkpoint every WATCH_CHECKPOINT_MS. */
			int64_t idle_ms =
			    (svc_step_begin() - ws->last_sent_ns) / 1000000;
			if (idle_ms >= WATCH_CHECKPOINT_MS) {
				pemba_watch_event ev = {.revision = ws->after,
				                        .is_checkpoint = 1};
				queue_response(&ws->q, &ev, true);
				continue;
			}
			wait_ms = WATCH_CHECKPOINT_MS - (int)idle_ms;
		}
		if (!svc_events_wait(ws->events, call, gen))
			continue; /* a commit slipped in: look again */
		grpc_call_wake_after(call, wait_ms);
		return GRPC_STEP_WAIT;
	}
}

static void watch_free(grpc_call *call, pemba_db *db, void *arg)
{
	watch_state *ws = arg;
	svc_events_forget(ws->events, call);
	queue_clear(&ws->q);
	free(ws->q.items);
	free(ws->q.ups);
	free(ws->filters);
	free(ws->prefixes);
	free(ws);
}

static const svc_stream_ops watch_ops = {watch_step, watch_free};

/* Validates the request and resolves the starting revision with a handle
 * of its own, then hands the stream to watch_step. */
static void handle_watch(grpc_call *call, void *ctx)
{
	svc_request req;
	if (svc_begin(call, ctx, &authzed__api__v1__watch_request__descriptor,
	              0, &req) != 0)
		return;
	const Authzed__Api__V1__WatchRequest *m = (const void *)req.message;
	pemba_error err = {0};
	watch_state *ws = xcalloc(1, sizeof(*ws));
	int rc = kinds_from_proto(m, &ws->wf.kinds, &err);
	if (rc == 0 && m->n_optional_object_types &&
	    m->n_optional_relationship_filters)
		rc = error_set(&err, PEMBA_EINVAL,
		               "invalid argument: cannot specify both object "
		               "types and relationship filters");
	ws->wf.object_types = (const char *const *)m->optional_object_types;
	ws->wf.nobject_types = m->n_optional_object_types;
	ws->filters = xcalloc(m->n_optional_relationship_filters + 1,
	                      sizeof(*ws->filters));
	ws->prefixes = xcalloc(m->n_optional_relationship_filters + 1,
	                       sizeof(*ws->prefixes));
	for (size_t i = 0; rc == 0 && i < m->n_optional_relationship_filters;
	     i++)
		rc = svc_filter_from_proto(m->optional_relationship_filters[i],
		                           true, &ws->filters[i],
		                           &ws->prefixes[i], &err);
	ws->wf.filters = ws->filters;
	ws->wf.nfilters = m->n_optional_relationship_filters;
	ws->wf.resource_id_prefixes = (const char *const *)ws->prefixes;
	if (rc == 0) {
		if (m->optional_start_cursor)
			rc = svc_decode_token(
			    req.db, m->optional_start_cursor->token,
			    PEMBA_SOURCE_AFTER, &ws->after, NULL, &err);
		else
			rc = pemba_head_revision(req.db, &ws->after, &err);
	}
	if (rc < 0) {
		svc_finish_error(call, &err);
		free(ws->filters);
		free(ws->prefixes);
		free(ws);
		svc_end(&req);
		return;
	}
	ws->q.kinds = ws->wf.kinds;
	ws->last_sent_ns = svc_step_begin();
	ws->events = svc_events_get(req.backend);
	svc_stream_start(&req, &watch_ops, ws);
}

size_t svc_watch_methods(svc_backend *b, grpc_method *out)
{
	out[0] = (grpc_method){"/authzed.api.v1.WatchService/Watch",
	                       GRPC_METHOD_SERVER_STREAMING, handle_watch, b};
	return 1;
}
