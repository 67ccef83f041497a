// `node --import ./test/helpers/without-platformatic.mjs …`: resolving @platformatic/kafka fails
// as it does in the production image, which installs no development dependency.
import { register } from "node:module";

const hook = `export async function resolve(specifier, context, next) {
  if (specifier === "@platformatic/kafka" || specifier.startsWith("@platformatic/kafka/")) {
    const err = new Error("Cannot find package '@platformatic/kafka' (hidden, as in the image)");
    err.code = "ERR_MODULE_NOT_FOUND";
    throw err;
  }
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
