"""A stock Python gRPC client (Debian's python3-grpcio), its stubs compiled from
the repository's .proto files by grpc_tools at test time: the wire contract as
a client in another language sees it. Prints one JSON line per step; exits 0.

usage: python_client.py STUBS_DIR ADDRESS CA_FILE ADMIN_TOKEN READER_TOKEN
"""
import json
import sys

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
from hablof.logistic_package_api.v1 import logistic_package_api_pb2 as pb  # noqa: E402
from hablof.logistic_package_api.v1 import logistic_package_api_pb2_grpc as rpc  # noqa: E402

address, ca_file, token, reader_token = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
with open(ca_file, "rb") as f:
    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
auth = [("authorization", "Bearer " + token)]


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


with grpc.secure_channel(address, credentials) as channel:
    api = rpc.LogisticPackageApiServiceStub(channel)
    created = api.CreatePackageV1(
        pb.CreatePackageV1Request(Title="Kiste", Material="Holz", MaximumVolume=12.5, Reusable=True),
        metadata=auth, timeout=10)
    say("create", id=created.ID)
    described = api.DescribePackageV1(pb.DescribePackageV1Request(PackageID=created.ID), metadata=auth, timeout=10)
    say("describe", title=described.Value.Title, material=described.Value.Material,
        volume=described.Value.MaximumVolume, reusable=described.Value.Reusable,
        hasUpdated=described.Value.HasField("Updated"))
    updated = api.UpdatePackageV1(
        pb.UpdatePackageV1Request(PackageID=created.ID, Title="Große Kiste", Reusable=pb.MaybeBool(Reusable=False)),
        metadata=auth, timeout=10)
    say("update", suc=updated.Suc)
    listed = api.ListPackagesV1(pb.ListPackagesV1Request(Limit=10), metadata=auth, timeout=10)
    say("list", titles=[p.Title for p in listed.Packages], reusable=[p.Reusable for p in listed.Packages],
        hasUpdated=[p.HasField("Updated") for p in listed.Packages])
    removed = api.RemovePackageV1(pb.RemovePackageV1Request(PackageID=created.ID), metadata=auth, timeout=10)
    say("remove", suc=removed.Suc)
    for step, metadata in (("no token", []), ("reader removes", [("authorization", "Bearer " + reader_token)])):
        try:
            api.RemovePackageV1(pb.RemovePackageV1Request(PackageID=created.ID), metadata=metadata, timeout=10)
            say(step, code="OK")
        except grpc.RpcError as err:
            say(step, code=err.code().name, details=err.details())
    try:
        api.DescribePackageV1(pb.DescribePackageV1Request(PackageID=created.ID), metadata=auth, timeout=10)
    except grpc.RpcError as err:
        say("describe removed", code=err.code().name, details=err.details())
