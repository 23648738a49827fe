/** The GatewayError a call rejects with. */
import { type GatewayError, isGatewayError } from "../../handlers/errors.js";

/** The GatewayError `promise` rejects with; any other outcome fails the test. */
export async function rejectionOf(promise: Promise<unknown>): Promise<GatewayError> {
  try {
    await promise;
  } catch (error) {
    if (isGatewayError(error)) return error;
    throw new Error(`expected a GatewayError, got ${String(error)}`, { cause: error });
  }
  throw new Error("expected a rejection");
}
