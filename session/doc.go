// Package session resolves the opaque session IDs browsers hold ("session ID
// outside, JWT inside"): a store maps an ID to a Record (subject, claims,
// metadata, timestamps) that the Check pipeline turns into an internal JWT.
// Logout and "kick this user off every device" take effect at once because
// the record, not the browser, is the source of truth.
//
// Two stores implement Store with the same semantics: MemoryStore (single
// process, development) and RedisStore (go-redis UniversalClient: single
// node, sentinel or cluster). The package also parses and strips the
// session cookie (IDFromRequest, StripCookie) and serves the admin API
// (NewAdminHandler, AdminClient).
//
// Invariants:
//
//   - A session ID is 32 bytes from crypto/rand, base64url without padding
//     (43 characters). Anything else is reason.SessionMalformed and is
//     rejected before any store call.
//   - Stores key records by SHA-256 of the decoded ID (Record.IDHash, hex).
//     No key, value, log line, metric label or error message holds a raw ID;
//     a dump of the store cannot be replayed as cookies.
//   - Every error a store returns from Lookup, Get and Revoke is a
//     *reason.Error: SessionMalformed, SessionNotFound (unknown, revoked or
//     gone), SessionExpired (past idle or absolute expiry) or
//     SessionStoreUnavailable (wrapping the cause). Create rejects bad input
//     with an error wrapping ErrInvalid.
//   - A session is live while now < IdleExpiresAt and now < ExpiresAt and
//     now < CreatedAt + Config.AbsoluteTimeout (so lowering the configured
//     absolute timeout applies to existing sessions).
//   - The idle expiry slides on Lookup, but the store writes at most once
//     per Config.IdleRefreshInterval per session: the effective idle
//     timeout lies between IdleTimeout-IdleRefreshInterval and IdleTimeout.
//   - An expired record is kept for one minute (expiredGrace) past its
//     expiry so lookups can answer session_expired rather than
//     session_not_found; afterwards it is gone. Redis TTLs are the expiry
//     plus this grace, never longer.
//   - Every live session whose ID Create returned is in its subject's index
//     at every instant, whatever fails in between (see "Atomicity").
//   - Nothing is registered globally: metrics exist only with
//     WithRegisterer.
//
// # Redis layout
//
// With the default key prefix "tollgate:":
//
//	tollgate:s:<hex sha256(id)>       HASH  sub, cl (claims JSON), md (metadata JSON),
//	                                        c, ls, ie, ae (created, last seen, idle
//	                                        expiry, absolute expiry; Unix ms)
//	                                        PTTL = min(ie, ae) - now + grace
//	tollgate:u:<hex sha256(subject)>  ZSET  member <hex sha256(id)>, score creation
//	                                        time in Unix µs; PTTL >= absolute timeout
//	tollgate:invalidate               pub/sub channel; payload <hex sha256(id)>
//
// # Atomicity
//
// Every command or Lua script touches exactly one key, so the same code runs
// unchanged on a single node, behind sentinel and on Redis Cluster (no hash
// tags are needed and none is used). Atomic, in every mode:
//
//   - create of a record (collision check, write, TTL);
//   - lookup (read, expiry check, throttled slide of the idle expiry);
//   - revoke of one record (read, delete, publish the invalidation);
//   - index maintenance on create (prune entries older than the absolute
//     timeout, add the new entry, extend the TTL, choose the entries beyond
//     max_per_subject, oldest first, never the new one).
//
// Record and index are different keys and are not updated atomically
// together; instead the order of steps keeps the invariant above:
// the record is written before its index entry (Create returns the ID only
// after both succeeded); an evicted or revoked session's record is deleted
// before its index entry is removed; index entries are pruned only when
// their record is gone or expired. Consequences: between choosing eviction
// victims and deleting them (one round trip) an evicted session still
// resolves; a session whose Create indexes it after RevokeSubject read the
// index survives (it is a login after the kick); a failure mid-way can leave
// dead index entries, which are pruned lazily (on create by age, on list
// and revoke-subject by absence) and expire with the index key.
//
// Use maxmemory-policy noeviction: every key has a TTL, so volatile-* and
// allkeys-* policies may drop an index and make its sessions unrevocable by
// subject.
//
// # Local cache
//
// RedisStore can keep successful lookups for Config.Cache.TTL (at most 1s)
// so a hot session costs no round trip. Revocations publish the record's
// hash on the invalidation channel from inside the revoke script; every
// replica drops the entry as soon as the message arrives and, in any case,
// within the TTL. The cache is used only while the subscription is
// confirmed: when the pub/sub connection fails the cache is cleared and
// bypassed until the resubscription is confirmed, so no invalidation can
// be missed. A lookup that raced with an invalidation never fills the cache.
package session
