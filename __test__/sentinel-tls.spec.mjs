// Sentinels reached over TLS (`sentinel: { tls: true }`): the master is found through
// TLS-only sentinel ports, the sentinels' certificate is verified with the `tls` option's
// CA, mutual TLS works, and `+switch-master` is heard over TLS too. A private set of
// real redis-server processes (master, replica, three sentinels with TLS ports) and
// certificates made by openssl at run time.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager, RedisStreamSessionManager } from '../index.mjs';
import { deliveryResumes, eventually, recorder, until } from './helpers/redis.mjs';
import { roundTrip } from './helpers/roundtrip.mjs';
import { MASTER_NAME, currentMasterPort, startSentinelSet } from './helpers/sentinel.mjs';
import { useCleanups } from './helpers/suite.mjs';
import { makeCertificates } from './helpers/tls.mjs';
import { failOnUnhandledRejections } from './helpers/unhandled.mjs';

failOnUnhandledRejections();
const cleanups = useCleanups();

let certs;
let set;
beforeAll(async () => {
	certs = makeCertificates();
	set = await startSentinelSet({ tls: certs.files });
});
afterAll(async () => {
	await set?.stop();
	certs?.remove();
});

// The data nodes speak plain text here (redis://); only the sentinels speak TLS.
const url = `redis://${MASTER_NAME}`;
const errors = [];
const tlsOptions = (of, tls) => ({
	sentinel: { nodes: of.tlsNodes, tls: true },
	tls,
	commandTimeout: 2000,
	connectTimeout: 1000,
	onError: (e) => errors.push(e.message),
});

/** The error of one info read (expected to fail) through these options. */
async function readError(options) {
	const info = new RedisInfoSessionManager(url, options);
	try {
		return await info.getClientInfo('x').catch((e) => e);
	} finally {
		await info.close();
	}
}

describe('Sentinel over TLS', () => {
	it('finds the master through TLS-only sentinel ports, verified with the given CA', async () => {
		expect(await roundTrip(url, tlsOptions(set, { ca: certs.ca }))).toEqual({ name: url, version: '1' });
	});

	it('verifies the sentinels\' certificate: an unknown CA is refused with a clear error', async () => {
		const error = await readError(tlsOptions(set, { ca: certs.otherCa }));
		expect(error).toBeInstanceOf(Error);
		expect(error.message).toMatch(/Could not read session info for session x: TLS handshake with Redis failed \(invalid peer certificate: UnknownIssuer\)/);
	});

	it('without sentinel.tls, the same TLS ports do not answer: calls reject, nothing hangs', async () => {
		const { tls: _, ...plain } = tlsOptions(set, undefined);
		const error = await readError({ ...plain, sentinel: { nodes: set.tlsNodes } });
		expect(error).toBeInstanceOf(Error);
		expect(error.message).toMatch(/Could not read session info for session x/);
	});

	it('mutual TLS to the sentinels: a client certificate is accepted, none is refused', async () => {
		const own = await startSentinelSet({ tls: certs.files, authClients: true });
		cleanups.push(() => own.stop());
		const mutual = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
		expect(await roundTrip(url, tlsOptions(own, mutual))).toEqual({ name: url, version: '1' });
		// 'x' exists, so the same read without the certificate can only fail at the
		// sentinels' handshake (a missing key would say "not found").
		const writer = new RedisInfoSessionManager(url, tlsOptions(own, mutual));
		await writer.setClientInfo('x', { name: 'mutual', version: '1' });
		await writer.close();
		expect(await readError(tlsOptions(own, mutual))).toEqual({ name: 'mutual', version: '1' });
		const error = await readError(tlsOptions(own, { ca: certs.ca }));
		expect(error).toBeInstanceOf(Error);
		expect(error.message).toMatch(/^Could not read session info for session x: .*CertificateRequired/);
	});

	it('TLS everywhere: rediss:// data nodes found through TLS sentinels, followed across a failover', async () => {
		const own = await startSentinelSet({ tls: certs.files, dataTls: true });
		cleanups.push(() => own.stop());
		const secureUrl = `rediss://${MASTER_NAME}`;
		const options = tlsOptions(own, { ca: certs.ca });
		expect(await roundTrip(secureUrl, options)).toEqual({ name: secureUrl, version: '1' });

		const streams = new RedisStreamSessionManager(secureUrl, options);
		const info = new RedisInfoSessionManager(secureUrl, options);
		cleanups.push(() => streams.close(), () => info.close());
		const rec = recorder();
		await streams.create('e1', rec);
		const before = await currentMasterPort(own.sentinels[0].port);
		await own.failover();
		await eventually(async () => (await currentMasterPort(own.sentinels[0].port)) !== before, 20_000, 'the sentinels to promote the replica');
		// Writes reach the new master over TLS (a replica would answer READONLY).
		await until(() => info.setClientInfo('e1', { name: 'after', version: '2' }), 'a write after the failover');
		expect(await info.getClientInfo('e1')).toEqual({ name: 'after', version: '2' });
		await deliveryResumes(streams, rec, 'e1', 'after a TLS failover');
	});

	// Per node: a rediss:// URL reaches its sentinel over TLS without sentinel.tls, so
	// sentinels in plain text and over TLS can share one list.
	it('rediss:// node URLs reach their sentinels over TLS, verified with the given CA', async () => {
		const nodes = set.tlsNodes.map((node) => `rediss://${node}`);
		expect(await roundTrip(url, { ...tlsOptions(set, { ca: certs.ca }), sentinel: { nodes } })).toEqual({ name: url, version: '1' });
		// An unknown CA: the URL's TLS is verified like sentinel.tls.
		const error = await readError({ ...tlsOptions(set, { ca: certs.otherCa }), sentinel: { nodes } });
		expect(error.message).toMatch(/Could not read session info for session x: TLS handshake with Redis failed \(invalid peer certificate: UnknownIssuer\)/);
	});

	it('one list, plain text and TLS: each node is reached as its entry says', async () => {
		const [first, second] = set.sentinels.map((_, i) => ({ plain: set.nodes[i], tls: set.tlsNodes[i] }));
		// The only usable entry is the one whose scheme asks for TLS (a TLS port spoken to
		// in plain text does not answer), then the only usable one is in plain text.
		for (const nodes of [
			[first.tls, { host: '127.0.0.1', port: Number(second.tls.split(':')[1]) }, `rediss://${second.tls}`],
			[`rediss://${first.plain}`, `redis://${second.plain}`],
		]) {
			expect(await roundTrip(url, { ...tlsOptions(set, { ca: certs.ca }), sentinel: { nodes } })).toEqual({ name: url, version: '1' });
		}
	});

	it('bad TLS sentinel options are a clear TypeError at construction', () => {
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: set.tlsNodes, tls: 'yes' } })).toThrow(/sentinel.tls/);
		// TLS material with a redis:// URL serves only sentinels reached over TLS.
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: set.tlsNodes }, tls: { ca: certs.ca } })).toThrow(
			/TLS options need a rediss:\/\/ URL/,
		);
		expect(() => new RedisInfoSessionManager(url, { sentinel: { nodes: set.tlsNodes, tls: true }, tls: { ca: 'nope' } })).toThrow(
			TypeError,
		);
	});

	// Its own set: the SIGSTOP leaves the first set without a master to fail back to.
	it('hears +switch-master over TLS: an idle stream follows a failover away from a frozen master', async () => {
		// A long TTL keeps the liveness check (which would notice the frozen master by its
		// timeouts) out of the window, so only the TLS watcher can move the subscription.
		const own = await startSentinelSet({ tls: certs.files });
		cleanups.push(() => own.stop());
		const options = { ...tlsOptions(own, { ca: certs.ca }), sessionTtlSeconds: 600 };
		const streams = new RedisStreamSessionManager(url, options);
		cleanups.push(() => streams.close());
		const rec = recorder();
		await streams.create('w1', rec);
		cleanups.push(await own.freezeMaster());

		const sender = new RedisStreamSessionManager(url, tlsOptions(own, { ca: certs.ca }));
		cleanups.push(() => sender.close());
		await deliveryResumes(sender, rec, 'w1', 'via the new master', 15_000);
	});
});
