// Types of @tmcp-rs/session-manager-redis: a drop-in for @tmcp/session-manager-redis.
// The classes are structurally assignable to StreamSessionManager / InfoSessionManager
// of @tmcp/session-manager and accepted by HttpTransport / SseTransport.

type SessionInfo = NonNullable<import('tmcp').Context['sessionInfo']>;

/**
 * A node of `sentinel.nodes` or `cluster.nodes`: `'host:port'` (IPv6 in brackets), a
 * `redis://` or `rediss://` URL, or `{ host, port }` (node-redis style).
 */
export type RedisNode = string | { host: string; port: number };

/** Optional settings; every one is an addition to upstream's constructor. */
export interface RedisSessionManagerOptions {
	/** Prefix for every key and channel. Default `''` (upstream's names, interoperable). */
	keyPrefix?: string;
	/** TTL of `available:session:{id}`, refreshed every third of it. Default 10. */
	sessionTtlSeconds?: number;
	/** Milliseconds a call may wait for Redis before it rejects. Default 5000. */
	commandTimeout?: number;
	/** Milliseconds one connection attempt may take. Default 5000. */
	connectTimeout?: number;
	/**
	 * Broadcast and info `delete` SCAN the keyspace like upstream, so they reach sessions
	 * and subscriptions created by upstream processes on the same Redis. Default false
	 * (one PUBLISH per broadcast, a reverse index for delete).
	 */
	upstreamCompatible?: boolean;
	/**
	 * TLS material (PEM) for `rediss://` URLs (and for the sentinels with `sentinel.tls`;
	 * then a `redis://` URL may take it too). The server certificate is always verified:
	 * against `ca` when given, else against the system's roots. `cert` + `key` enable
	 * mutual TLS.
	 */
	tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
	/**
	 * Find the master through these sentinels; the URL's host is then the master group
	 * name. Failovers are followed by both connections. `username`/`password` are the
	 * sentinels' credentials and `tls: true` reaches them over TLS, verified like the data
	 * nodes (`tls.ca` when given, else the system's roots; `tls.cert` + `tls.key` for
	 * mutual TLS). A node given as a URL (`redis://user:pass@host:26379`, with its port)
	 * brings its own credentials, and `rediss://` reaches that sentinel over TLS.
	 */
	sentinel?: { nodes: RedisNode[]; username?: string; password?: string; tls?: boolean };
	/**
	 * Redis Cluster: the URL is a seed node (its credentials and TLS apply to every node);
	 * `nodes` adds more seeds (only their host and port are used). Session channels are
	 * sharded (SSUBSCRIBE/SPUBLISH). Excludes `sentinel` and a database other than 0.
	 */
	cluster?: boolean | { nodes: RedisNode[] };
	/** Receives background errors (lost connection, failed refresh, a controller that threw,
	 * a dropped setter promise that failed). Default: a rate-limited process warning. */
	onError?: (error: Error) => void;
}

/**
 * The stable `code` of every Error a manager rejects with or reports (README
 * "Observability"). Errors an app's own callback threw are handed on as thrown when they
 * are Errors; anything else it threw is wrapped with `TMCP_REDIS_CALLBACK`.
 */
export type TmcpRedisErrorCode =
	/** Never handed to Redis (also when `commandTimeout` passed first): safe to retry. */
	| 'TMCP_REDIS_NOT_SENT'
	/** Handed to Redis, no answer within `commandTimeout`: it may still have run. */
	| 'TMCP_REDIS_TIMEOUT'
	/** No usable connection: refused, lost, TLS, authentication, no node reachable. */
	| 'TMCP_REDIS_CONNECTION'
	/** An error reply from Redis (e.g. NOPERM). */
	| 'TMCP_REDIS_REPLY'
	/** The manager was closed. */
	| 'TMCP_REDIS_CLOSED'
	/** A value read from Redis is corrupt (wrong type, not JSON, not UTF-8, unknown log level). */
	| 'TMCP_REDIS_BAD_DATA'
	/** A getter's value is not stored (upstream's "… not found for session …"). */
	| 'TMCP_REDIS_NOT_FOUND'
	/** An app callback (a controller's enqueue, a subscription's send or close) threw. */
	| 'TMCP_REDIS_CALLBACK'
	/** A bad argument or option (always a TypeError). */
	| 'TMCP_REDIS_BAD_ARGUMENT';

/** An Error of this package. */
export interface TmcpRedisError extends Error {
	code: TmcpRedisErrorCode;
}

/** The codes by name. */
export declare const ERROR_CODES: Readonly<{
	NOT_SENT: 'TMCP_REDIS_NOT_SENT';
	TIMEOUT: 'TMCP_REDIS_TIMEOUT';
	CONNECTION: 'TMCP_REDIS_CONNECTION';
	REPLY: 'TMCP_REDIS_REPLY';
	CLOSED: 'TMCP_REDIS_CLOSED';
	BAD_DATA: 'TMCP_REDIS_BAD_DATA';
	NOT_FOUND: 'TMCP_REDIS_NOT_FOUND';
	CALLBACK: 'TMCP_REDIS_CALLBACK';
	BAD_ARGUMENT: 'TMCP_REDIS_BAD_ARGUMENT';
}>;

/** The `node:diagnostics_channel` names (node-redis's style). */
export declare const CHANNELS: Readonly<{
	/** TracingChannel (`start`/`end`/`asyncStart`/`asyncEnd`/`error`), context {@link CommandContext}. */
	command: 'tmcp-redis:command';
	/** {@link ConnectionEvent} */
	connection: 'tmcp-redis:connection';
	/** {@link TopologyEvent} */
	topology: 'tmcp-redis:topology';
	/** {@link ErrorEvent} */
	error: 'tmcp-redis:error';
}>;

/** The context of a `tmcp-redis:command` trace: what the call is and where it goes, never an argument. */
export interface CommandContext {
	/** The method, e.g. `send`, `setClientInfo`, `create`. */
	operation: string;
	manager: 'streams' | 'info' | 'subscriptions';
	/** Host (a Unix socket's path; a Sentinel master as last resolved, its group name until then; a cluster's seed). */
	serverAddress: string | undefined;
	serverPort: number | undefined;
	database: number;
	/** Set by the TracingChannel when the call resolved / rejected. */
	result?: unknown;
	error?: TmcpRedisError;
}

/** `tmcp-redis:connection`: a connection became usable, or was lost (and is being re-established). */
export interface ConnectionEvent {
	event: 'ready' | 'lost';
	role: 'command' | 'pubsub';
	serverAddress: string | undefined;
	serverPort: number | undefined;
}

/** `tmcp-redis:topology`: a Sentinel failover (`+switch-master`) or a cluster's slots changing owners, followed. */
export interface TopologyEvent {
	event: 'master-switched' | 'slots-moved';
	role: 'command' | 'pubsub';
	serverAddress: string | undefined;
	serverPort: number | undefined;
}

/** `tmcp-redis:error`: what `onError` gets (its message may name a session, as onError's does). */
export interface ErrorEvent {
	error: Error;
	code: TmcpRedisErrorCode | undefined;
}

/**
 * What every manager's `stats()` returns: counters since construction, gauges as of
 * now, all finite numbers. The command connection's figures (`reconnects`,
 * `topologyChanges`, `timeouts`, `connections`) appear in every manager built on it.
 */
export interface ManagerStats {
	/** Calls handed to Redis and not yet settled (gauge). */
	commandsInFlight: number;
	/** Calls settled, succeeded or failed. */
	commands: number;
	/** Calls that failed. */
	commandErrors: number;
	/** Calls that timed out (sent or not) and background work (subscriptions, checks, liveness refreshes) that did. */
	timeouts: number;
	/** Connections re-established after a loss. */
	reconnects: number;
	/** Sentinel switches and cluster slot-owner changes followed (the most any one connection followed). */
	topologyChanges: number;
	/** Connections up now (gauge). */
	connections: number;
}

export interface StreamSessionManagerStats extends ManagerStats {
	/** Sessions held here (gauge). */
	sessions: number;
	/** Messages Redis accepted from `send`: one per target session, one per broadcast. */
	sent: number;
	/** Messages handed to a controller's `enqueue`. */
	delivered: number;
	/** Messages that arrived for no live local session, or whose `enqueue` threw. */
	dropped: number;
	/** Local sessions whose channels this manager wants subscribed (gauge). */
	subscriptionsWanted: number;
	/** Local sessions whose message channel Redis confirmed (gauge; sessions, not channels). */
	subscriptionsConfirmed: number;
	/** Messages received and not yet handed to JavaScript (gauge). */
	deliveryQueue: number;
}

export interface InfoSessionManagerStats extends ManagerStats {}

export interface SubscriptionManagerStats extends ManagerStats {
	/** Local subscriptions (gauge). */
	subscriptions: number;
	/** Same as `subscriptions` (the earlier name). */
	active: number;
	/** Notifications Redis accepted from `send`. */
	notificationsSent: number;
	/** Notifications a local subscription's `send` took. */
	notificationsDelivered: number;
	/** Notifications a local subscription's `send` threw on (or that came for one since closed). */
	dropped: number;
	/** Messages on the channel dropped as malformed or foreign. */
	ignored: number;
	/** Notifications no local subscription wanted. */
	unwanted: number;
	/** 1 while the notification channel is subscribed, else 0 (gauge). */
	subscribed: number;
	/** Notifications matched and not yet handed to JavaScript (gauge). */
	deliveryQueue: number;
}

/** Owns this process's SSE streams; routes notifications to them through Redis pub/sub. */
export declare class RedisStreamSessionManager {
	constructor(redisUrl: string, options?: RedisSessionManagerOptions);
	/** Resolves once the subscription is live in Redis. */
	create(id: string, controller: ReadableStreamDefaultController): Promise<void>;
	/** Ends the session everywhere; `has(id)` is false from every process afterwards. */
	delete(id: string): Promise<void>;
	/** Whether a live stream for `id` exists in any process. */
	has(id: string): Promise<boolean>;
	/** `undefined` sends to every live session. Resolves once Redis accepted the publish. */
	send(sessions: string[] | undefined, data: string): Promise<void>;
	/** Closes local streams, removes their liveness keys and the connections. */
	close(): Promise<void>;
	[Symbol.asyncDispose](): Promise<void>;
	/** Counters and gauges (synchronous, a fresh object each call). */
	stats(): StreamSessionManagerStats;
}

/** Persists per-session metadata so stateless requests can rebuild the MCP context. */
export declare class RedisInfoSessionManager {
	constructor(redisUrl: string, options?: RedisSessionManagerOptions);
	getClientInfo(id: string): Promise<SessionInfo['clientInfo']>;
	setClientInfo(id: string, clientInfo: SessionInfo['clientInfo']): Promise<void>;
	getClientCapabilities(id: string): Promise<SessionInfo['clientCapabilities']>;
	setClientCapabilities(id: string, clientCapabilities: SessionInfo['clientCapabilities']): Promise<void>;
	getLogLevel(id: string): Promise<SessionInfo['logLevel']>;
	setLogLevel(id: string, logLevel: SessionInfo['logLevel']): Promise<void>;
	getSubscriptions(uri: string): Promise<string[]>;
	addSubscription(id: string, uri: string): Promise<void>;
	removeSubscription(id: string, uri: string): Promise<void>;
	/** Removes all metadata of the session and takes it out of every subscription set. */
	delete(id: string): Promise<void>;
	/** Releases the connection; calls already made still complete. */
	close(): Promise<void>;
	[Symbol.asyncDispose](): Promise<void>;
	/** Counters and gauges (synchronous, a fresh object each call). */
	stats(): InfoSessionManagerStats;
}

type Subscription = import('@tmcp/session-manager').Subscription;
type SubscriptionCallbacks = import('@tmcp/session-manager').SubscriptionCallbacks;
type SubscriptionNotification = Parameters<import('@tmcp/session-manager').SubscriptionManager['send']>[0];

/**
 * MCP `subscriptions/listen` streams shared between server processes (for HttpTransport's
 * `subscriptionManager` option). Notifications travel on `tmcp:subscriptions`, as upstream's;
 * matching runs natively, so a process without a matching subscription does no JS work.
 */
export declare class RedisSubscriptionManager {
	constructor(redisUrl: string, options?: RedisSessionManagerOptions);
	/** False for a duplicate `(origin, id)`; rejects within `commandTimeout` when Redis is unreachable. */
	create(subscription: Subscription, callbacks: SubscriptionCallbacks): Promise<boolean>;
	/** Publishes to every matching subscription of every process; resolves once Redis accepted it. */
	send(notification: SubscriptionNotification): Promise<void>;
	/** Closes one subscription after draining it; idempotent (same promise). */
	close(id: string | number, origin: string, reason: 'closed' | 'cancelled'): Promise<boolean>;
	/** Closes every subscription of this process, or of one origin. */
	closeAll(origin?: string, reason?: 'closed' | 'cancelled'): Promise<void>;
	/** Closes every subscription and releases the connections (the manager's own lifecycle). */
	dispose(): Promise<void>;
	[Symbol.asyncDispose](): Promise<void>;
	/** Counters and gauges (synchronous, a fresh object each call). */
	stats(): SubscriptionManagerStats;
}

/** The three managers on one shared command connection. */
export declare function createSessionManagers(
	redisUrl: string,
	options?: RedisSessionManagerOptions,
): { streams: RedisStreamSessionManager; info: RedisInfoSessionManager; subscriptions: RedisSubscriptionManager };
