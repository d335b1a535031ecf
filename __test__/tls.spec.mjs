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
		const mutual = { ca: pem.ca, cert: pem.cert, key: pem.key };
		expect(await roundTrip(url, { tls: mutual })).toEqual({ name: url, version: '1' });
		// The same read with and without the certificate: 'x' exists, so only a refused
		// handshake can make the second one fail (a missing key would say "not found").
		const read = async (tls) => {
			const info = new RedisInfoSessionManager(url, { commandTimeout: 3000, tls });
			try {
				return await info.getClientInfo('x').catch((e) => e);
			} finally {
				await info.close();
			}
		};
		const writer = new RedisInfoSessionManager(url, { commandTimeout: 3000, tls: mutual });
		await writer.setClientInfo('x', { name: 'mutual', version: '1' });
		await writer.close();
		expect(await read(mutual)).toEqual({ name: 'mutual', version: '1' });
		const error = await read({ ca: pem.ca });
		expect(error).toBeInstanceOf(Error);
		// rustls's wording of the server's alert (TLS 1.3 reports it after the handshake).
		expect(error.message).toMatch(/^Could not read session info for session x: .*received fatal alert: CertificateRequired/);
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
