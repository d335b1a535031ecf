// A private Sentinel set for tests: one master, one replica and three sentinels, each a
// redis-server on a free loopback port, stopped by PID.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { eventually, freePort, startRedis } from './redis.mjs';

export const MASTER_NAME = 'tmcpmaster';

/**
 * A node-redis client on `port` that ignores errors (for looking and for SENTINEL
 * commands), as `auth` (`{ username?, password }`) when the sentinels require it.
 */
export async function sentinelClient(port, auth) {
	const c = createClient({ url: `redis://127.0.0.1:${port}`, username: auth?.username, password: auth?.password });
	c.on('error', () => {});
	await c.connect();
	return c;
}
const client = sentinelClient;

/** The master's port as the sentinels see it now (asking the sentinel on `sentinelPort`). */
export async function currentMasterPort(sentinelPort, auth) {
	const c = await client(sentinelPort, auth);
	try {
		const [, port] = await c.sendCommand(['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME]);
		return Number(port);
	} finally {
		c.destroy();
	}
}

/** redis-server arguments for a TLS port of its own with these PEM files. */
const tlsArgs = (tls, tlsPort, authClients) => [
	'--tls-port', String(tlsPort),
	'--tls-cert-file', tls.cert,
	'--tls-key-file', tls.key,
	'--tls-ca-cert-file', tls.ca,
	'--tls-auth-clients', authClients ? 'yes' : 'no',
	'--tls-replication', 'yes',
];

/** A data node; with `tls`, also on a TLS port (`tlsPort`) that replication and sentinels use. */
async function startDataNode(tls, replicaOf) {
	const tlsPort = tls ? await freePort() : undefined;
	const of = replicaOf && (replicaOf.tlsPort ?? replicaOf.port);
	const node = await startRedis({
		args: [...(tls ? tlsArgs(tls, tlsPort, false) : []), ...(of ? ['--replicaof', '127.0.0.1', String(of)] : [])],
	});
	node.tlsPort = tlsPort;
	return node;
}

/** How many clients of the sentinel on `port` are subscribed (a manager's `+switch-master` listener). */
export async function subscribedClients(port, auth) {
	const c = await client(port, auth);
	try {
		const list = String(await c.sendCommand(['CLIENT', 'LIST']));
		return list.split('\n').filter((line) => / sub=[1-9]/.test(line)).length;
	} finally {
		c.destroy();
	}
}

/**
 * Starts the set. With `auth` (`{ username?, password }`) the sentinels require it (an
 * ACL user, or `requirepass` without a username), and use it among themselves. With
 * `tls` (the server's PEM file paths, see helpers/tls.mjs) each
 * sentinel also listens for TLS on a port of its own (`tlsNodes`), requiring a client
 * certificate when `authClients`; the plain ports stay for the tests' own looks. With
 * `dataTls` too, the master and replica also serve TLS, replicate over it, and the
 * sentinels monitor and announce their TLS ports: TLS everywhere.
 * @param {{ tls?: { ca: string, cert: string, key: string }, authClients?: boolean, dataTls?: boolean }} [options]
 */
export async function startSentinelSet({ tls, authClients = false, dataTls = false, auth } = {}) {
	const dir = mkdtempSync(join(tmpdir(), 'tmcp-sentinel-'));
	const master = await startDataNode(dataTls && tls);
	const replica = await startDataNode(dataTls && tls, master);
	const sentinels = [];
	const tlsPorts = [];
	for (let i = 0; i < 3; i++) {
		const port = await freePort();
		const tlsPort = tls ? await freePort() : 0;
		tlsPorts.push(tlsPort);
		const conf = join(dir, `sentinel-${i}.conf`);
		writeFileSync(
			conf,
			[
				`port ${port}`,
				'bind 127.0.0.1',
				`sentinel monitor ${MASTER_NAME} 127.0.0.1 ${master.tlsPort ?? master.port} 2`,
				`sentinel down-after-milliseconds ${MASTER_NAME} 1000`,
				`sentinel failover-timeout ${MASTER_NAME} 3000`,
				`sentinel parallel-syncs ${MASTER_NAME} 1`,
				...(tls
					? [
							`tls-port ${tlsPort}`,
							`tls-cert-file ${tls.cert}`,
							`tls-key-file ${tls.key}`,
							`tls-ca-cert-file ${tls.ca}`,
							`tls-auth-clients ${authClients ? 'yes' : 'no'}`,
							// Sentinels reach the data nodes (and one another) over TLS.
							`tls-replication ${dataTls ? 'yes' : 'no'}`,
						]
					: []),
				...(auth?.username
					? [`user default off`, `user ${auth.username} on >${auth.password} ~* &* +@all`, `sentinel sentinel-user ${auth.username}`, `sentinel sentinel-pass ${auth.password}`]
					: auth
						? [`requirepass ${auth.password}`, `sentinel sentinel-pass ${auth.password}`]
						: []),
				'',
			].join('\n'),
		);
		sentinels.push(await startRedis({ port, config: conf, sentinel: true }));
	}
	// Ready when every sentinel knows the replica and the other sentinels.
	await eventually(async () => {
		for (const s of sentinels) {
			const c = await client(s.port, auth);
			try {
				const replicas = await c.sendCommand(['SENTINEL', 'REPLICAS', MASTER_NAME]);
				const peers = await c.sendCommand(['SENTINEL', 'SENTINELS', MASTER_NAME]);
				if (replicas.length < 1 || peers.length < 2) return false;
			} finally {
				c.destroy();
			}
		}
		return true;
	}, 30_000, 'sentinels to discover the replica and each other');
	return {
		master,
		replica,
		sentinels,
		nodes: sentinels.map((s) => `127.0.0.1:${s.port}`),
		tlsNodes: tlsPorts.map((port) => `127.0.0.1:${port}`),
		async failover() {
			const c = await client(sentinels[0].port, auth);
			try {
				await c.sendCommand(['SENTINEL', 'FAILOVER', MASTER_NAME]);
			} finally {
				c.destroy();
			}
		},
		/**
		 * Freezes the current master (SIGSTOP) and waits until the sentinels promote the
		 * replica, asking the sentinel on `askPort`. Returns the thaw (SIGCONT), for the
		 * test's cleanups.
		 */
		async freezeMaster(askPort = sentinels[0].port) {
			const before = await currentMasterPort(askPort, auth);
			const frozen = [master, replica].find((n) => (n.tlsPort ?? n.port) === before);
			frozen.signal('SIGSTOP');
			const thaw = () => frozen.signal('SIGCONT');
			try {
				await eventually(async () => (await currentMasterPort(askPort, auth)) !== before, 30_000, 'the sentinels to promote the replica');
			} catch (error) {
				thaw();
				throw error;
			}
			return thaw;
		},
		async stop() {
			for (const s of [...sentinels, replica, master]) await s.stop();
			rmSync(dir, { recursive: true, force: true });
		},
	};
}
