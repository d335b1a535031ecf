// Certificates for TLS tests, made by openssl at run time in a private folder: a CA, a
// second CA that signed nothing the servers use, a server certificate for 127.0.0.1 and
// localhost, and a client certificate for mutual TLS, all signed by the first CA. The
// server certificate serves as a client one too: cluster nodes present it to each other
// on the TLS cluster bus.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * @returns {{ files: { ca: string, cert: string, key: string }, ca: string, otherCa: string,
 *   clientCert: string, clientKey: string, remove(): void }} `files`: the server's PEM
 *   files (paths, for redis-server); the rest: PEM text for the clients.
 */
export function makeCertificates() {
	const dir = mkdtempSync(join(tmpdir(), 'tmcp-rs-tls-'));
	const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
	const makeCa = (name) =>
		openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`);
	const makeCert = (name, ext) => {
		writeFileSync(join(dir, `${name}.ext`), ext);
		openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
		openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`);
	};
	makeCa('ca');
	makeCa('other-ca');
	makeCert('server', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
	makeCert('client', 'extendedKeyUsage=clientAuth\n');
	const read = (f) => readFileSync(join(dir, f), 'utf8');
	return {
		files: { ca: join(dir, 'ca.crt'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') },
		ca: read('ca.crt'),
		otherCa: read('other-ca.crt'),
		clientCert: read('client.crt'),
		clientKey: read('client.key'),
		remove: () => rmSync(dir, { recursive: true, force: true }),
	};
}
