package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	// Port 1 refuses connections: only what happens before a call can succeed.
	code = run(context.Background(), append([]string{"-addr", "127.0.0.1:1", "-timeout", "2s"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"-o", "yaml", "products"}, {"order"}, {"place", "-line", "w=x"}} {
		if code, _, _ := runCLI(args...); code != 2 {
			t.Errorf("shopctl %q exited %d, want 2", args, code)
		}
	}
}

func TestBadRequestAsJSON(t *testing.T) {
	code, stdout, stderr := runCLI("-o", "json", "register", "-email", "nope", "-password", "correct horse", "-name", "Ada")
	if code != 64+3 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 67 and nothing", code, stdout)
	}
	var failure struct {
		Code            string
		FieldViolations []struct{ Field, Description string }
	}
	if err := json.Unmarshal([]byte(stderr), &failure); err != nil {
		t.Fatalf("stderr is not JSON: %q", stderr)
	}
	if failure.Code != "INVALID_ARGUMENT" || len(failure.FieldViolations) != 1 || failure.FieldViolations[0].Field != "email" {
		t.Errorf("failure %+v", failure)
	}
}

func TestUnreachableGatewayIsUnavailable(t *testing.T) {
	if code, _, stderr := runCLI("products"); code != 64+14 {
		t.Errorf("exit %d (%s), want 78 (UNAVAILABLE)", code, stderr)
	}
}
