// A private Redis Cluster for tests: three masters and three replicas, each a redis-server
// on a free loopback port (cluster bus on port + 10000), stopped by PID.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { eventually, freePort, startRedis } from './redis.mjs';

/** A node-redis client on one node (not cluster-aware) that ignores errors. */
export async function nodeClient(port) {
	const c = createClient({ url: `redis://127.0.0.1:${port}` });
	c.on('error', () => {});
	await c.connect();
	return c;
}

/** Runs one command on one node. */
export async function onNode(port, args) {
	const c = await nodeClient(port);
	try {
		return await c.sendCommand(args);
	} finally {
		c.destroy();
	}
}

/** The CRC16 hash slot of a key or channel (Redis Cluster's, with hash tags). */
export function slotOf(key) {
	const open = key.indexOf('{');
	if (open !== -1) {
		const close = key.indexOf('}', open + 1);
		if (close > open + 1) key = key.slice(open + 1, close);
	}
	let crc = 0;
	for (const byte of Buffer.from(key)) {
		crc ^= byte << 8;
		for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
	}
	return crc % 16384;
}

const CONFIG = [
	'--cluster-enabled', 'yes',
	'--cluster-node-timeout', '2000',
	'--cluster-require-full-coverage', 'no',
	'--cluster-allow-pubsubshard-when-down', 'yes',
	'--cluster-replica-validity-factor', '0',
	'--appendonly', 'no',
];

/**
 * Starts the cluster: three masters, each with `replicas` replicas (1 by default). With
 * `tls: { cert, key, ca }` (file paths) every node also serves TLS, the cluster bus and
 * replication run over TLS, and `url` is the rediss:// one (CLUSTER SLOTS then answers
 * TLS clients with the TLS ports).
 * @param {{ replicas?: number, tls?: { cert: string, key: string, ca: string } }} [options]
 */
export async function startCluster({ replicas = 1, tls, keepDirs = false } = {}) {
	const nodes = [];
	// With keepDirs each node keeps its directory (nodes.conf) for a restart on its port.
	const dirs = [];
	const tlsArgs = (tlsPort) => tls
		? [
				'--tls-port', String(tlsPort),
				'--tls-cert-file', tls.cert,
				'--tls-key-file', tls.key,
				'--tls-ca-cert-file', tls.ca,
				'--tls-auth-clients', 'no',
				'--tls-cluster', 'yes',
				'--tls-replication', 'yes',
			]
		: [];
	try {
		for (let i = 0; i < 3 * (1 + replicas); i++) {
			const port = await freePort({ bus: true });
			const tlsPort = tls ? await freePort({ bus: true }) : undefined;
			const dir = keepDirs ? mkdtempSync(join(tmpdir(), 'tmcp-cluster-')) : undefined;
			if (dir) dirs.push(dir);
			const node = await startRedis({ port, dir, args: [...CONFIG, ...tlsArgs(tlsPort)] });
			node.tlsPort = tlsPort;
			node.args = [...CONFIG, ...tlsArgs(tlsPort)];
			nodes.push(node);
		}
		execFileSync('redis-cli', [
			...(tls ? ['--tls', '--cacert', tls.ca] : []),
			'--cluster', 'create',
			...nodes.map((n) => `127.0.0.1:${n.tlsPort ?? n.port}`),
			'--cluster-replicas', String(replicas),
			'--cluster-yes',
			// redis-cli waits for the nodes to join for ever: fail instead (a bus that cannot
			// connect, e.g. a refused TLS handshake).
		], { stdio: 'ignore', timeout: 60_000 });
	} catch (e) {
		for (const n of nodes) await n.stop();
		for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
		throw e;
	}
	const cluster = {
		nodes,
		/** A live node's URL: the seed. */
		get url() {
			const node = nodes.find((n) => n.alive !== false);
			return tls ? `rediss://127.0.0.1:${node.tlsPort}` : `redis://127.0.0.1:${node.port}`;
		},
		/** Every node as `host:port` (more seeds for the `cluster` option). */
		get seeds() {
			return nodes.map((n) => `127.0.0.1:${n.tlsPort ?? n.port}`);
		},
		/** `[{ port, id, master: boolean, slots: [[from, to], …], masterId }]` as CLUSTER NODES says on `askPort`. */
		async topology(askPort) {
			const alive = nodes.filter((n) => n.alive !== false);
			const text = String(await onNode(askPort ?? alive[0].port, ['CLUSTER', 'NODES']));
			return text.trim().split('\n').map((line) => {
				const [id, addr, flags, masterId, , , , state, ...slots] = line.split(' ');
				return {
					id,
					port: Number(addr.split('@')[0].split(':')[1]),
					master: flags.includes('master'),
					failed: flags.includes('fail') || state !== 'connected',
					masterId,
					slots: slots.filter((s) => !s.startsWith('[')).map((s) => s.split('-').map(Number)),
				};
			});
		},
		/** The port of the master serving `slot`, as node `askPort` sees it. */
		async ownerOf(slot, askPort) {
			for (const n of await cluster.topology(askPort)) {
				if (!n.master) continue;
				for (const [from, to = from] of n.slots) if (slot >= from && slot <= to) return n.port;
			}
			return undefined;
		},
		/** The port of a replica of the master on `masterPort`. */
		async replicaOf(masterPort) {
			const topology = await cluster.topology();
			const master = topology.find((n) => n.port === masterPort);
			return topology.find((n) => !n.master && n.masterId === master.id && !n.failed)?.port;
		},
		/** True once every node agrees: state ok, every slot served, replicas attached. */
		async healthy() {
			for (const n of nodes.filter((n) => n.alive !== false)) {
				const info = String(await onNode(n.port, ['CLUSTER', 'INFO']));
				if (!info.includes('cluster_state:ok') || !info.includes('cluster_slots_ok:16384')) return false;
			}
			return true;
		},
		/** Kills a node (SIGKILL) and remembers it is gone. */
		async kill(port) {
			const node = nodes.find((n) => n.port === port);
			node.alive = false;
			await node.stop('SIGKILL');
		},
		/**
		 * Moves a slot that holds no keys from its master to `toPort` (the steps of a live
		 * migration: IMPORTING/MIGRATING, then NODE on both and on every other master).
		 */
		async moveSlot(slot, toPort) {
			const topology = await cluster.topology();
			const fromPort = await cluster.ownerOf(slot);
			const to = topology.find((n) => n.port === toPort);
			const from = topology.find((n) => n.port === fromPort);
			await onNode(toPort, ['CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', from.id]);
			await onNode(fromPort, ['CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', to.id]);
			const keys = await onNode(fromPort, ['CLUSTER', 'GETKEYSINSLOT', String(slot), '1000']);
			if (keys.length > 0) {
				await onNode(fromPort, ['MIGRATE', '127.0.0.1', String(toPort), '', '0', '5000', 'KEYS', ...keys]);
			}
			await onNode(toPort, ['CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id]);
			await onNode(fromPort, ['CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id]);
			for (const n of topology.filter((n) => n.master && n.port !== toPort && n.port !== fromPort && !n.failed)) {
				await onNode(n.port, ['CLUSTER', 'SETSLOT', String(slot), 'NODE', to.id]).catch(() => {});
			}
		},
		/** Starts a killed node again on its port, from its nodes.conf (needs keepDirs). */
		async restart(port) {
			const at = nodes.findIndex((n) => n.port === port);
			const old = nodes[at];
			if (!keepDirs) throw new Error('restart needs startCluster({ keepDirs: true })');
			const node = await startRedis({ port, dir: old.dir, args: old.args });
			node.tlsPort = old.tlsPort;
			node.args = old.args;
			nodes[at] = node;
		},
		async stop() {
			for (const n of nodes) await n.stop();
			for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
		},
	};
	await eventually(() => cluster.healthy(), 30_000, 'the cluster to be ready');
	// Every replica attached to its master.
	await eventually(async () => {
		const topology = await cluster.topology();
		return topology.filter((n) => !n.master).length === 3 * replicas;
	}, 30_000, 'the replicas to attach');
	return cluster;
}
