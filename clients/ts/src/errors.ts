// Failed calls as shopctl reports them: the gRPC status and, for a bad request, the
// google.rpc.BadRequest field violations from its grpc-status-details-bin trailer.
import { create, createFileRegistry, type Message } from "@bufbuild/protobuf";
import type { GenMessage } from "@bufbuild/protobuf/codegenv2";
import {
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
  FileDescriptorProtoSchema,
} from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";

export type FieldViolation = Message<"google.rpc.BadRequest.FieldViolation"> & {
  field: string;
  description: string;
  reason: string;
};

export type BadRequest = Message<"google.rpc.BadRequest"> & {
  fieldViolations: FieldViolation[];
};

// google.rpc.BadRequest from google/rpc/error_details.proto, the fields shopctl reads
// (a newer field arrives as an unknown field). No npm package carries google/rpc for
// protobuf-es v2, and no contract imports it, so `buf generate` does not emit it.
const string = (name: string, number: number, jsonName: string) => ({
  name,
  number,
  jsonName,
  label: Label.OPTIONAL,
  type: Type.STRING,
});
const errorDetails = create(FileDescriptorProtoSchema, {
  name: "google/rpc/error_details.proto",
  package: "google.rpc",
  syntax: "proto3",
  messageType: [
    {
      name: "BadRequest",
      field: [
        {
          name: "field_violations",
          number: 1,
          jsonName: "fieldViolations",
          label: Label.REPEATED,
          type: Type.MESSAGE,
          typeName: ".google.rpc.BadRequest.FieldViolation",
        },
      ],
      nestedType: [
        {
          name: "FieldViolation",
          field: [
            string("field", 1, "field"),
            string("description", 2, "description"),
            string("reason", 3, "reason"),
          ],
        },
      ],
    },
  ],
});

export const BadRequestSchema = createFileRegistry(errorDetails, () => undefined).getMessage(
  "google.rpc.BadRequest",
) as GenMessage<BadRequest>;

/** A mistake on the command line (exit code 2). */
export class UsageError extends Error {
  override name = "UsageError";
}

/** Which step of a journey failed. */
export class StepError extends Error {
  override name = "StepError";
  constructor(
    readonly step: string,
    override readonly cause: unknown,
  ) {
    super(`${step}: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

export interface Failure {
  step?: string;
  /** The canonical code name, INVALID_ARGUMENT, as every gRPC library spells it. */
  code: string;
  message: string;
  fieldViolations?: { field: string; description: string; reason?: string }[];
}

/** The canonical name of a gRPC code: Code.InvalidArgument is INVALID_ARGUMENT. */
export function codeName(code: Code): string {
  if (code === Code.Canceled) {
    return "CANCELLED"; // Connect spells it the American way
  }
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** The gRPC status inside err (also inside a StepError), if it has one. */
export function connectErrorOf(err: unknown): ConnectError | undefined {
  const inner = err instanceof StepError ? err.cause : err;
  return inner instanceof ConnectError ? inner : undefined;
}

/** Explain a failed call; undefined when err is not a gRPC error. */
export function explain(err: unknown): Failure | undefined {
  const status = connectErrorOf(err);
  if (status === undefined) {
    return undefined;
  }
  const failure: Failure = { code: codeName(status.code), message: status.rawMessage };
  if (err instanceof StepError) {
    failure.step = err.step;
  }
  const violations = status
    .findDetails(BadRequestSchema)
    .flatMap((bad) => bad.fieldViolations)
    .map(({ field, description, reason }) => ({
      field,
      description,
      ...(reason ? { reason } : {}),
    }));
  if (violations.length > 0) {
    failure.fieldViolations = violations;
  }
  return failure;
}

/** grpcurl's convention: 64 plus the gRPC code for a failed call, 2 for usage, else 1. */
export function exitCode(err: unknown): number {
  if (err instanceof UsageError) {
    return 2;
  }
  const status = connectErrorOf(err);
  return status === undefined ? 1 : 64 + status.code;
}
