// pemba's gRPC server reflection through an independent reflection client
// (npm grpc-js-reflection-client on @grpc/grpc-js), both protocol
// versions: list the services, describe CheckPermission, resolve its
// request type from the reflection answers alone, then call the server
// with a client built from those answers.
// Usage: node reflection.mjs PORT KEY PROXY_PORT  (a `pemba serve` on
// 127.0.0.1:PORT with preshared key KEY; a `pemba proxy` in front of it on
// PROXY_PORT).  Last line: "N passed, M failed".
import * as grpc from '@grpc/grpc-js';
import { GrpcReflection } from 'grpc-js-reflection-client';

const [port, key, proxyPort] = process.argv.slice(2);
const target = `127.0.0.1:${port}`;
let passed = 0, failed = 0;
function check(name, ok, detail) {
  if (ok) { passed++; console.log(`ok   ${name}`); }
  else { failed++; console.log(`FAIL ${name}${detail ? `\n     ${detail}` : ''}`); }
}
async function rejects(p) {
  try { await p; return null; } catch (e) { return e; }
}

const expectedServices = [
  'authzed.api.v1.ExperimentalService',
  'authzed.api.v1.PermissionsService',
  'authzed.api.v1.SchemaService',
  'authzed.api.v1.WatchService',
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
  'pemba.v1.MigrationService',
];

for (const version of ['v1', 'v1alpha']) {
  // No key: reflection needs none (as SpiceDB).
  const r = new GrpcReflection(target, grpc.credentials.createInsecure(), {}, version);
  const services = await r.listServices();
  for (const s of expectedServices)
    check(`${version} list_services has ${s}`, services.includes(s), JSON.stringify(services));

  const methods = await r.listMethods('authzed.api.v1.PermissionsService');
  const check_method = methods.find((m) => m.name === 'CheckPermission');
  check(`${version} PermissionsService lists CheckPermission`, !!check_method,
        JSON.stringify(methods.map((m) => m.name)));
  check(`${version} lists the streaming LookupResources`,
        methods.some((m) => m.name === 'LookupResources'));

  // Describe the method and resolve its request type from the answers.
  const d = await r.getDescriptorBySymbol('authzed.api.v1.PermissionsService.CheckPermission');
  const root = d.getProtobufJsRoot();
  const svc = root.lookupService('authzed.api.v1.PermissionsService');
  const m = svc.methods.CheckPermission;
  check(`${version} CheckPermission is unary`, m && !m.requestStream && !m.responseStream);
  m.resolve();
  const req = m.resolvedRequestType;
  check(`${version} request type is authzed.api.v1.CheckPermissionRequest`,
        req && req.fullName === '.authzed.api.v1.CheckPermissionRequest', req && req.fullName);
  const fields = Object.fromEntries(Object.values(req.fields).map((f) => [f.name, f.id]));
  check(`${version} CheckPermissionRequest fields and numbers`,
        fields.consistency === 1 && fields.resource === 2 && fields.permission === 3 &&
        fields.subject === 4 && fields.context === 5 && fields.withTracing === 6,
        JSON.stringify(fields));
  const resource = req.fields.resource.resolve().resolvedType;
  check(`${version} resource resolves to ObjectReference (a dependency file)`,
        resource && resource.fullName === '.authzed.api.v1.ObjectReference' &&
        resource.fields.objectType.id === 1 && resource.fields.objectId.id === 2);
  const ctx = req.fields.context.resolve().resolvedType;
  check(`${version} context resolves to google.protobuf.Struct`,
        ctx && ctx.fullName === '.google.protobuf.Struct');
  const perm = root.lookupEnum('authzed.api.v1.CheckPermissionResponse.Permissionship');
  check(`${version} nested enum Permissionship`,
        perm.values.PERMISSIONSHIP_HAS_PERMISSION === 2, JSON.stringify(perm.values));

  // A nested message by symbol, a file by name.
  const nested = await r.getDescriptorBySymbol('authzed.api.v1.CheckBulkPermissionsRequestItem');
  check(`${version} file_containing_symbol for a message`,
        !!nested.getProtobufJsRoot().lookupType('authzed.api.v1.CheckBulkPermissionsRequestItem'));
  const byFile = await r.getDescriptorByFileName('authzed/api/v1/debug.proto');
  check(`${version} file_by_filename`,
        !!byFile.getProtobufJsRoot().lookupType('authzed.api.v1.CheckDebugTrace'));
  const health = await r.getDescriptorBySymbol('grpc.health.v1.Health');
  check(`${version} the health service is described`,
        !!health.getProtobufJsRoot().lookupService('grpc.health.v1.Health'));
  const own = await r.getDescriptorBySymbol('pemba.v1.MigrationService');
  check(`${version} pemba's own service is described`,
        !!own.getProtobufJsRoot().lookupService('pemba.v1.MigrationService'));

  // Errors are answered in the stream.
  const e1 = await rejects(r.getDescriptorBySymbol('authzed.api.v1.NoSuchThing'));
  check(`${version} unknown symbol is an error`, e1 && /not found/.test(String(e1.message || e1)),
        String(e1));
  const e2 = await rejects(r.getDescriptorByFileName('no/such.proto'));
  check(`${version} unknown file is an error`, e2 && /not found/.test(String(e2.message || e2)),
        String(e2));
  const ext = await r.getAllExtensionNumbersOfType('authzed.api.v1.CheckPermissionRequest');
  check(`${version} all_extension_numbers_of_type: none`,
        ext && (ext.extensionNumber || ext.extension_number || []).length === 0, JSON.stringify(ext));
  r.client?.close?.();
}

// Call the server through a client built only from reflection.
{
  const r = new GrpcReflection(target, grpc.credentials.createInsecure(), {}, 'v1');
  const d = await r.getDescriptorBySymbol('authzed.api.v1.SchemaService');
  const pkg = d.getPackageObject({ keepCase: true, longs: String, enums: String, defaults: true });
  const Schema = pkg.authzed.api.v1.SchemaService;
  const client = new Schema(target, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${key}`);
  const call = (method, req, meta) => new Promise((resolve) =>
    client[method](req, meta, (err, resp) => resolve({ err, resp })));
  const w = await call('WriteSchema', { schema: 'definition user {}\ndefinition document {\n  relation viewer: user\n}\n' }, md);
  check('WriteSchema through the reflected client', !w.err && w.resp.written_at, String(w.err));
  const rd = await call('ReadSchema', {}, md);
  check('ReadSchema through the reflected client', !rd.err && /relation viewer: user/.test(rd.resp.schema_text),
        String(rd.err));
  const unauth = await call('ReadSchema', {}, new grpc.Metadata());
  check('other services still need the key', unauth.err && unauth.err.code === grpc.status.UNAUTHENTICATED,
        String(unauth.err));
  client.close();
}

// The proxy answers for its own table: what can be called through it.
{
  const r = new GrpcReflection(`127.0.0.1:${proxyPort}`, grpc.credentials.createInsecure(), {}, 'v1');
  const services = await r.listServices();
  check('proxy lists PermissionsService and its own ProxyService',
        services.includes('authzed.api.v1.PermissionsService') &&
        services.includes('pemba.v1.ProxyService') &&
        services.includes('grpc.reflection.v1alpha.ServerReflection'), JSON.stringify(services));
  check('proxy does not list what it does not relay', !services.includes('pemba.v1.MigrationService'),
        JSON.stringify(services));
  const d = await r.getDescriptorBySymbol('authzed.api.v1.PermissionsService.CheckPermission');
  check('proxy describes CheckPermission',
        !!d.getProtobufJsRoot().lookupType('authzed.api.v1.CheckPermissionRequest'));
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
