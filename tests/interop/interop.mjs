// pemba's zed-format backups against avsc, an independent Avro
// implementation (with snappyjs for the codec and a CRC32 written here).
// Usage: node interop.mjs PEMBA PORT WORKDIR  (a serve-testing server on
// 127.0.0.1:PORT).  Last line: "N passed, M failed".
import { execFileSync } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import avro from 'avsc';
import snappy from 'snappyjs';

const [pemba, port, work] = process.argv.slice(2);
const conn = ['--insecure', '--endpoint', `127.0.0.1:${port}`, '--token', 'interop'];
let passed = 0, failed = 0;
function check(name, ok, detail) {
  if (ok) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail ? `\n     ${detail}` : ''}`); }
}
function run(...args) {
  return execFileSync(pemba, args, { encoding: 'utf8', timeout: 30000, stdio: ['ignore', 'pipe', 'pipe'] });
}
const lines = (s) => s.split('\n').filter(Boolean).sort();

// --- the Avro snappy codec: snappy data + big-endian CRC32 of the input
const crcTable = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
const codecs = {
  snappy: {
    enc(buf, cb) {
      const crc = Buffer.alloc(4);
      crc.writeUInt32BE(crc32(buf));
      cb(null, Buffer.concat([Buffer.from(snappy.compress(buf)), crc]));
    },
    dec(buf, cb) {
      try {
        const data = Buffer.from(snappy.uncompress(buf.subarray(0, buf.length - 4)));
        if (crc32(data) !== buf.readUInt32BE(buf.length - 4)) throw new Error('snappy block CRC32 mismatch');
        cb(null, data);
      } catch (err) { cb(err); }
    },
  },
};

// --- zed's writer schema (src/tools/README.md, backup_format.c)
const NS = 'com.authzed.spicedb.backup';
const REL = `${NS}.relationship_v1`, SCHEMA = `${NS}.schema_v1`;
const str = (name) => ({ name, type: 'string' });
const type = avro.Type.forSchema([
  {
    type: 'record', name: 'relationship_v1', namespace: NS, fields: [
      str('object_type'), str('object_id'), str('relation'), str('subject_object_type'),
      str('subject_object_id'), str('subject_relation'), str('caveat_name'),
      { name: 'caveat_context', type: 'bytes' },
      { name: 'expiration', type: { type: 'long', logicalType: 'timestamp-millis' } },
    ],
  },
  { type: 'record', name: 'schema_v1', namespace: NS, fields: [str('schema_text')] },
], { wrapUnions: true });
const NO_EXPIRATION = -62135596800000; // Go's zero time.Time
const TOKEN_KEY = 'com.authzed.spicedb.zedtoken.v1';

// google.protobuf.Struct {"n": 1}, by hand: fields (1) = map entry
// {key (1) = "n", value (2) = Value {number_value (2, double) = 1}}.
const num = Buffer.alloc(8); num.writeDoubleLE(1);
const value = Buffer.concat([Buffer.from([0x11]), num]);
const entry = Buffer.concat([Buffer.from([0x0a, 1]), Buffer.from('n'), Buffer.from([0x12, value.length]), value]);
const struct = Buffer.concat([Buffer.from([0x0a, entry.length]), entry]);

const schemaText = `use expiration

definition user {}

caveat big(n double) {
	n > 0.0
}

definition doc {
	relation viewer: user | user with big | user with expiration | doc#viewer
}`;
const rel = (ot, oid, r, st, sid, sr = '', cav = '', ctx = Buffer.alloc(0), exp = NO_EXPIRATION) => ({
  object_type: ot, object_id: oid, relation: r, subject_object_type: st, subject_object_id: sid,
  subject_relation: sr, caveat_name: cav, caveat_context: ctx, expiration: exp,
});
const rels = [
  rel('doc', '1', 'viewer', 'user', 'anne'),
  rel('doc', '2', 'viewer', 'user', 'bob', '', 'big', struct),
  rel('doc', '3', 'viewer', 'user', 'carl', '', '', Buffer.alloc(0), Date.UTC(2099, 0, 2, 3, 4, 5)),
  rel('doc', '4', 'viewer', 'doc', '1', 'viewer'),
];
const relLines = lines([
  'doc:1#viewer@user:anne',
  'doc:2#viewer@user:bob[big:{"n":1}]',
  'doc:3#viewer@user:carl[expiration:2099-01-02T03:04:05Z]',
  'doc:4#viewer@doc:1#viewer',
].join('\n'));
const token = 'GhUKEzE3MzM0NTY3ODkwMDAwMDAwMDA=';

// ---------------------------------------------- 1. avsc writes, pemba reads
const written = `${work}/avsc.avro`;
await new Promise((resolve, reject) => {
  const enc = new avro.streams.BlockEncoder(type, {
    codec: 'snappy', codecs: { snappy: codecs.snappy.enc },
    metadata: { [TOKEN_KEY]: Buffer.from(token) },
  });
  enc.on('error', reject);
  enc.pipe(createWriteStream(written)).on('error', reject).on('close', resolve);
  enc.write({ [SCHEMA]: { schema_text: schemaText } });
  for (const r of rels) enc.write({ [REL]: r });
  enc.end();
});

function attempt(name, fn) {
  try { fn(); } catch (err) { check(name, false, String(err.stderr || err.message).trim()); }
}
attempt('parse-revision prints the token avsc wrote', () => {
  const out = run('backup', 'parse-revision', written).trim();
  check('parse-revision prints the token avsc wrote', out === token, `got ${out}`);
});
attempt('parse-schema prints the schema avsc wrote', () => {
  const out = run('backup', 'parse-schema', written).trim();
  check('parse-schema prints the schema avsc wrote', out === schemaText, `got:\n${out}`);
});
attempt('parse-relationships prints them with caveat context and expiration', () => {
  const out = lines(run('backup', 'parse-relationships', written));
  check('parse-relationships prints them with caveat context and expiration',
    JSON.stringify(out) === JSON.stringify(relLines), `got ${JSON.stringify(out)}`);
});
attempt('restore, then export shows the relationships', () => {
  run('backup', 'restore', written, ...conn);
  const out = lines(run('relationship', 'export', ...conn));
  check('restore, then export shows the relationships',
    JSON.stringify(out) === JSON.stringify(relLines), `got ${JSON.stringify(out)}`);
});

// ---------------------------------------------- 2. pemba writes, avsc reads
const created = `${work}/pemba.avro`;
attempt('backup create from the restored store', () => run('backup', 'create', created, ...conn));
const wantToken = (() => { try { return run('backup', 'parse-revision', created).trim(); } catch { return null; } })();
const decoded = !existsSync(created) ? { err: new Error('no backup file') } : await new Promise((resolve) => {
  const records = [];
  let meta = null;
  avro.createFileDecoder(created, { codecs: { snappy: codecs.snappy.dec }, parseHook: (s) => avro.Type.forSchema(s, { wrapUnions: true }) })
    .on('metadata', (_t, codec, header) => { meta = { codec, header }; })
    .on('data', (r) => records.push(r))
    .on('error', (err) => resolve({ err }))
    .on('end', () => resolve({ meta, records }));
});
if (decoded.err) {
  check('avsc decodes the backup pemba creates', false, decoded.err.message);
} else {
  const { meta, records } = decoded;
  check('avsc decodes it: snappy codec, every block CRC32 checked', meta.codec === 'snappy', meta.codec);
  const got = meta.header.meta[TOKEN_KEY]?.toString();
  check('its zedtoken metadata equals what parse-revision prints', wantToken && got === wantToken,
    `metadata ${got}, parse-revision ${wantToken}`);
  const first = records[0] || {};
  check('the first record is the schema_v1', SCHEMA in first && first[SCHEMA].schema_text.includes('caveat big'),
    JSON.stringify(first));
  const norm = (r) => JSON.stringify({ ...r, caveat_context: Buffer.from(r.caveat_context).toString('hex') });
  const gotRels = records.slice(1).map((r) => (REL in r ? norm(r[REL]) : JSON.stringify(r))).sort();
  const wantRels = rels.map(norm).sort();
  check('its relationships equal the restored ones (caveat context bytes, expiration)',
    JSON.stringify(gotRels) === JSON.stringify(wantRels), `got ${gotRels.join('\n         ')}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
