package shopctl

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Failure is a failed call as shopctl reports it: the gRPC status and, for a bad
// request, the field violations from the google.rpc.BadRequest in its details.
type Failure struct {
	// Step is the journey step that failed, if any.
	Step       string      `json:"step,omitempty"`
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	Violations []Violation `json:"fieldViolations,omitempty"`
}

// Violation is one google.rpc.BadRequest.FieldViolation.
type Violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
	Reason      string `json:"reason,omitempty"`
}

// Explain reads the gRPC status of err, decoding the details that travel in the
// grpc-status-details-bin trailer. ok is false when err carries no gRPC status.
func Explain(err error) (f Failure, ok bool) {
	st, ok := statusOf(err)
	if !ok {
		return Failure{}, false
	}
	f = Failure{Code: CodeName(st.Code()), Message: st.Message()}
	var step *StepError
	if errors.As(err, &step) {
		f.Step = step.Step
	}
	for _, detail := range st.Details() {
		bad, isBad := detail.(*errdetails.BadRequest)
		if !isBad {
			continue
		}
		for _, v := range bad.GetFieldViolations() {
			f.Violations = append(f.Violations, Violation{
				Field:       v.GetField(),
				Description: v.GetDescription(),
				Reason:      v.GetReason(),
			})
		}
	}
	return f, true
}

// CodeName is the canonical name of a gRPC code, INVALID_ARGUMENT, as every language's
// gRPC library and grpcurl's JSON spell it (Go's codes.Code.String says InvalidArgument).
func CodeName(c codes.Code) string {
	if name, ok := code.Code_name[int32(c)]; ok {
		return name
	}
	return c.String()
}

// Code is the gRPC code of err, also when err wraps it (Unknown when it has none).
func Code(err error) codes.Code {
	if st, ok := statusOf(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// statusOf finds the gRPC status in err's chain. status.FromError would do too, but
// it puts the wrapping text into the status message.
func statusOf(err error) (*status.Status, bool) {
	var grpcErr interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &grpcErr) {
		return nil, false
	}
	return grpcErr.GRPCStatus(), true
}

// ExitCode follows grpcurl: 64 plus the gRPC code for a failed call, 1 otherwise.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var usage UsageError
	if errors.As(err, &usage) {
		return 2
	}
	if st, ok := statusOf(err); ok && st.Code() != codes.OK {
		return 64 + int(st.Code())
	}
	return 1
}

// UsageError is a mistake on the command line.
type UsageError string

func (e UsageError) Error() string { return string(e) }
