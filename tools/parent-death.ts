import { existsSync } from "node:fs";

// The one way our development processes (make run's supervisor, the bench, the tests) start a
// child that must not outlive them: util-linux's setpriv sets the parent-death signal and then
// execs the command, so the child's pid is the command's own. Where setpriv is missing the
// command runs as it is, without that guarantee.

const setpriv = "/usr/bin/setpriv";
let present: boolean | undefined;

/**
 * `command` (program and arguments) as [file, args] for `spawn`, run so that it gets `signal`
 * when the process that spawned it dies.
 */
export function withParentDeathSignal(command: readonly string[], signal: "TERM" | "KILL"): [string, string[]] {
  present ??= existsSync(setpriv);
  if (!present) return [command[0]!, command.slice(1)];
  return [setpriv, ["--pdeathsig", signal, "--", ...command]];
}
