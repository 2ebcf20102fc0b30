// Package shopctl is a small gRPC client for the shop, made from the generated code in
// gen/go: the pieces of the shopctl command (connect, call, follow an order, explain
// errors), usable and testable without a terminal.
package shopctl

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/gen/go/shop/order/v1"
	userv1 "github.com/shopmesh/shopmesh/gen/go/shop/user/v1"
)

// DefaultTimeout is the deadline of one call when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options say where the gateway is and how every call is made.
type Options struct {
	// Addr is the gateway's host:port. The local gateway speaks plaintext HTTP/2.
	Addr string
	// Token is sent as `authorization: Bearer <token>`; empty sends no header.
	Token string
	// Timeout is the deadline of each call, so a stuck gateway never hangs the client.
	Timeout time.Duration
	// SkipValidation sends requests without checking their protovalidate rules first
	// (to see what the server says about a bad request).
	SkipValidation bool
}

// Client holds one connection to the gateway and a stub per service.
type Client struct {
	Users     userv1.UserServiceClient
	Orders    orderv1.OrderServiceClient
	Inventory inventoryv1.InventoryServiceClient

	conn      *grpc.ClientConn
	timeout   time.Duration
	validate  bool
	validator protovalidate.Validator

	mu    sync.Mutex
	token string
}

// Dial connects lazily to opts.Addr (the first call opens the connection); extra dial
// options are for tests.
func Dial(opts Options, extra ...grpc.DialOption) (*Client, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}
	c := &Client{
		timeout:   opts.Timeout,
		validate:  !opts.SkipValidation,
		validator: validator,
		token:     opts.Token,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	dialOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(c.intercept),
	}, extra...)
	// passthrough: an address, not a name to resolve and balance over.
	conn, err := grpc.NewClient("passthrough:///"+opts.Addr, dialOpts...)
	if err != nil {
		return nil, err
	}
	c.conn = conn
	c.Users = userv1.NewUserServiceClient(conn)
	c.Orders = orderv1.NewOrderServiceClient(conn)
	c.Inventory = inventoryv1.NewInventoryServiceClient(conn)
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// SetToken changes the bearer token of later calls (after a login).
func (c *Client) SetToken(token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.token = token
}

// Token is the bearer token calls carry now.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// intercept gives every call a deadline and the bearer token, and checks the request's
// protovalidate rules before anything is sent.
func (c *Client) intercept(
	ctx context.Context,
	method string,
	req, reply any,
	cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker,
	opts ...grpc.CallOption,
) error {
	if msg, ok := req.(proto.Message); ok && c.validate {
		if err := c.validator.Validate(msg); err != nil {
			return localInvalid(err)
		}
	}
	// The call's own deadline; an earlier one from the caller (a journey's wait) stays.
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if token := c.Token(); token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// localInvalid turns a protovalidate failure into the same INVALID_ARGUMENT +
// google.rpc.BadRequest the services answer, so both are reported alike.
func localInvalid(err error) error {
	verr, ok := err.(*protovalidate.ValidationError)
	if !ok {
		// A broken rule (a CEL compile error), not a bad request.
		return status.Errorf(codes.Internal, "validating the request: %v", err)
	}
	bad := &errdetails.BadRequest{}
	fields := make([]string, 0, len(verr.Violations))
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
		name := field
		if name == "" {
			name = "(message)" // a rule on the whole message
		}
		if !slices.Contains(fields, name) {
			fields = append(fields, name)
		}
		bad.FieldViolations = append(bad.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       field,
			Description: fmt.Sprintf("%s [%s]", v.Proto.GetMessage(), v.Proto.GetRuleId()),
		})
	}
	slices.Sort(fields)
	st := status.New(codes.InvalidArgument,
		fmt.Sprintf("invalid %s (checked by shopctl, not sent)", strings.Join(fields, ", ")))
	withDetails, derr := st.WithDetails(bad)
	if derr != nil {
		return st.Err()
	}
	return withDetails.Err()
}
