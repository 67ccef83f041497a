import assert from "node:assert/strict";
import { test } from "node:test";
import { useFixture } from "./helpers/fixture.js";
import { grpc, rpcError } from "./helpers/grpc-client.js";

const fx = useFixture();

/** Parses the Prometheus text format into "name{labels}" → value. */
async function scrape(): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${fx.server.ports.metrics}/metrics`)).text();
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const space = line.lastIndexOf(" ");
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

test("after a scripted set of calls, each grpc-server metric has the right value", async () => {
  const a = await fx.client.createPackageV1({ Title: "a", Material: "m", MaximumVolume: 1 });
  const b = await fx.client.createPackageV1({ Title: "b", Material: "m", MaximumVolume: 1 }, { "x-request-id": "k-1" });
  // A replay writes no event and must not count as one.
  await fx.client.createPackageV1({ Title: "b", Material: "m", MaximumVolume: 1 }, { "x-request-id": "k-1" });
  await fx.client.updatePackageV1({ PackageID: a.ID, Title: "a2" });
  await fx.client.removePackageV1({ PackageID: b.ID });
  await fx.client.describePackageV1({ PackageID: a.ID });
  await rpcError(fx.client.describePackageV1({ PackageID: b.ID }), grpc.status.NOT_FOUND);
  await rpcError(fx.client.removePackageV1({ PackageID: "999999" }), grpc.status.NOT_FOUND);
  await rpcError(
    fx.client.createPackageV1({ Title: "", Material: "m", MaximumVolume: 1 }),
    grpc.status.INVALID_ARGUMENT,
  );
  // REST goes through the same interceptors.
  const rest = await fetch(`${fx.server.gatewayUrl}/v1/packages/${b.ID}`);
  assert.equal(rest.status, 404);

  const m = await scrape();
  assert.equal(m.get('logistic_package_api_cud_event_total{type="Created"}'), 2);
  assert.equal(m.get('logistic_package_api_cud_event_total{type="Updated"}'), 1);
  assert.equal(m.get('logistic_package_api_cud_event_total{type="Removed"}'), 1);
  assert.equal(m.get('logistic_package_api_not_found_total{method="DescribePackageV1"}'), 2);
  assert.equal(m.get('logistic_package_api_not_found_total{method="RemovePackageV1"}'), 1);
  assert.equal(m.get('logistic_package_api_grpc_requests_total{method="CreatePackageV1",code="OK"}'), 3);
  assert.equal(m.get('logistic_package_api_grpc_requests_total{method="CreatePackageV1",code="InvalidArgument"}'), 1);
  assert.equal(m.get('logistic_package_api_grpc_requests_total{method="DescribePackageV1",code="NotFound"}'), 2);
  assert.equal(m.get('logistic_package_api_grpc_requests_total{method="DescribePackageV1",code="OK"}'), 1);
  assert.equal(
    m.get('logistic_package_api_grpc_request_duration_seconds_count{method="UpdatePackageV1",code="OK"}'),
    1,
  );
  assert.ok((m.get("process_resident_memory_bytes") ?? 0) > 0, "Node process metrics are exported");
});
