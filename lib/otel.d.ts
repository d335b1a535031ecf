// Types of `@tmcp-rs/session-manager-redis/otel`. Structural: no dependency on
// `@opentelemetry/api`'s types (an optional peer dependency), any MeterProvider fits.

/** The part of an OpenTelemetry `MeterProvider` this entry uses. */
export interface MeterProviderLike {
	getMeter(name: string, version?: string, options?: object): any;
}

export interface InstrumentOptions {
	/** Where the metrics go. Default: the global MeterProvider of `@opentelemetry/api`. */
	meterProvider?: MeterProviderLike;
}

/**
 * Registers, per OpenTelemetry semantic conventions: `db.client.operation.duration`
 * (histogram, s; `db.system.name=redis`, `db.operation.name`, `db.namespace`,
 * `server.address`, `server.port`, `error.type` on failure), `db.client.connection.count`,
 * `tmcp.session_manager.sessions`, `tmcp.session_manager.messages` (`direction`: sent /
 * delivered / dropped) and `tmcp.session_manager.reconnects`. No session id on any
 * attribute. `dispose()` stops recording.
 */
export declare function instrument(options?: InstrumentOptions): { dispose(): void };
