/**
 * Prepares (or, with `--check`, only inspects) the Redis the gateway uses:
 * both stream keys exist and are streams, their length and first/last ids,
 * the retention publishers apply, and `maxmemory-policy`. The same command as
 * `edge-gateway infra provision`, for operators working from a checkout.
 *
 * Run it with the gateway's own environment (`GATEWAY_REDIS_*` and the two
 * stream variables, parsed by the same rules as the gateway):
 *
 *     node --import tsx infra/provision-redis.ts [--check] [--trim] [--max-len N]
 *
 * Exit status: 0 when both keys are streams, 1 on any failure, 2 on bad usage.
 */
import { runProvisionCli } from "../runtime/cli/provision-command.js";

process.exitCode = await runProvisionCli(process.argv.slice(2));
