// Types of @tmcp-rs/session-manager-redis: a drop-in for @tmcp/session-manager-redis.
// The classes are structurally assignable to StreamSessionManager / InfoSessionManager
// of @tmcp/session-manager and accepted by HttpTransport / SseTransport.

type SessionInfo = NonNullable<import('tmcp').Context['sessionInfo']>;

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
	 * Find the master through these sentinels (`host:port` each); the URL's host is then
	 * the master group name. Failovers are followed by both connections. `tls: true`
	 * reaches the sentinels over TLS, verified like the data nodes (`tls.ca` when given,
	 * else the system's roots; `tls.cert` + `tls.key` for mutual TLS).
	 */
	sentinel?: { nodes: string[]; username?: string; password?: string; tls?: boolean };
	/**
	 * Redis Cluster: the URL is a seed node (its credentials and TLS apply to every node);
	 * `nodes` adds more seeds (URLs or `host:port`). Session channels are sharded
	 * (SSUBSCRIBE/SPUBLISH). Excludes `sentinel` and a database other than 0.
	 */
	cluster?: boolean | { nodes: string[] };
	/** Receives background errors (lost connection, failed refresh, a controller that threw,
	 * a dropped setter promise that failed). Default: a rate-limited process warning. */
	onError?: (error: Error) => void;
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
	/** Local subscriptions; messages on the channel dropped as malformed or foreign; notifications no local subscription wanted. */
	readonly stats: { active: number; ignored: number; unwanted: number };
}

/** The three managers on one shared command connection. */
export declare function createSessionManagers(
	redisUrl: string,
	options?: RedisSessionManagerOptions,
): { streams: RedisStreamSessionManager; info: RedisInfoSessionManager; subscriptions: RedisSubscriptionManager };
