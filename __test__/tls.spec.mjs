// rediss:// against a redis-server with TLS, with a CA and certificates made by openssl
// at run time: verified by default, a given CA accepted, an unknown CA refused, mTLS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisInfoSessionManager } from '../index.mjs';
import { freePort, startRedis } from './helpers/redis.mjs';
import { roundTrip } from './helpers/roundtrip.mjs';
import { makeCertificates } from './helpers/tls.mjs';

let certs;
let pem;
let servers = [];

async function tlsServer(authClients) {
	const tlsPort = await freePort();
	const server = await startRedis({
		args: [
			'--tls-port', String(tlsPort),
			'--tls-cert-file', certs.files.cert,
			'--tls-key-file', certs.files.key,
			'--tls-ca-cert-file', certs.files.ca,
			'--tls-auth-clients', authClients ? 'yes' : 'no',
		],
	});
	servers.push(server);
	return `rediss://127.0.0.1:${tlsPort}`;
}

beforeAll(() => {
	certs = makeCertificates();
	pem = { ca: certs.ca, otherCa: certs.otherCa, cert: certs.clientCert, key: certs.clientKey };
});

afterAll(async () => {
	for (const server of servers) await server.stop();
	certs?.remove();
});

describe('TLS', () => {
	it('works with the CA passed in options (PEM string or Buffer)', async () => {
		const url = await tlsServer(false);
		expect(await roundTrip(url, { tls: { ca: pem.ca } })).toEqual({ name: url, version: '1' });
		expect(await roundTrip(url, { tls: { ca: Buffer.from(pem.ca) } })).toEqual({ name: url, version: '1' });
	});

	it('verifies the certificate by default: an unknown CA is refused with a clear error', async () => {
		const url = await tlsServer(false);
		for (const options of [{}, { tls: { ca: pem.otherCa } }]) {
			const info = new RedisInfoSessionManager(url, { commandTimeout: 3000, ...options });
			const error = await info.getClientInfo('x').catch((e) => e);
			await info.close();
			expect(error).toBeInstanceOf(Error);
			// rustls words it (the redis crate's TLS).
			expect(error.message).toMatch(/TLS handshake with Redis failed \(invalid peer certificate: UnknownIssuer\)/);
		}
	});

	it('mutual TLS: a client certificate is accepted, none is refused', async () => {
		const url = await tlsServer(true);
		expect(await roundTrip(url, { tls: { ca: pem.ca, cert: pem.cert, key: pem.key } })).toEqual({ name: url, version: '1' });
		const info = new RedisInfoSessionManager(url, { commandTimeout: 3000, tls: { ca: pem.ca } });
		const error = await info.getClientInfo('x').catch((e) => e);
		await info.close();
		expect(error).toBeInstanceOf(Error);
	});

	it('rejects TLS options that cannot work, at construction', () => {
		expect(() => new RedisInfoSessionManager('redis://127.0.0.1:1', { tls: { ca: pem.ca } })).toThrow(
			/TLS options need a rediss:\/\/ URL/,
		);
		expect(() => new RedisInfoSessionManager('rediss://127.0.0.1:1', { tls: { ca: 'nope' } })).toThrow(TypeError);
		expect(() => new RedisInfoSessionManager('rediss://127.0.0.1:1', { tls: { cert: pem.cert } })).toThrow(
			/go together/,
		);
		expect(() => new RedisInfoSessionManager('rediss://127.0.0.1:1', { tls: { ca: 5 } })).toThrow(/tls.ca/);
		expect(() => new RedisInfoSessionManager('rediss://127.0.0.1:1', { tls: { pfx: 'x' } })).toThrow(/tls.pfx/);
	});
});
