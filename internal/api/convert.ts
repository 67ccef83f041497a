import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  MaybeTimestampSchema,
  type Package,
  PackageSchema,
} from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import type { PackageRecord } from "../domain/package.js";

export function toPackageMessage(record: PackageRecord): Package {
  return create(PackageSchema, {
    ID: record.id,
    Title: record.title,
    Material: record.material,
    MaximumVolume: record.maximumVolume,
    Reusable: record.reusable,
    Created: timestampFromDate(record.created),
    Updated:
      record.updated === null ? undefined : create(MaybeTimestampSchema, { Time: timestampFromDate(record.updated) }),
  });
}
