package shopctl

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/shopmesh/shopmesh/gen/go/shop/common/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/gen/go/shop/order/v1"
	userv1 "github.com/shopmesh/shopmesh/gen/go/shop/user/v1"
)

const token = "tok-1"

// fakeShop stands in for the gateway and the services behind it: public Register and
// Login, a bearer token for everything else, and an order that confirms after a while.
type fakeShop struct {
	userv1.UnimplementedUserServiceServer
	inventoryv1.UnimplementedInventoryServiceServer
	orderv1.UnimplementedOrderServiceServer

	mu          sync.Mutex
	calls       []string
	noDeadline  []string
	longestLeft time.Duration
	reads       int
	order       *orderv1.Order
	validateErr func(proto.Message) error
}

func (f *fakeShop) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	f.mu.Lock()
	f.calls = append(f.calls, info.FullMethod)
	if deadline, ok := ctx.Deadline(); !ok {
		f.noDeadline = append(f.noDeadline, info.FullMethod)
	} else {
		f.longestLeft = max(f.longestLeft, time.Until(deadline))
	}
	f.mu.Unlock()
	if err := f.validateErr(req.(proto.Message)); err != nil {
		return nil, err
	}
	public := strings.HasSuffix(info.FullMethod, "/Register") || strings.HasSuffix(info.FullMethod, "/Login")
	md, _ := metadata.FromIncomingContext(ctx)
	if !public && (len(md.Get("authorization")) != 1 || md.Get("authorization")[0] != "Bearer "+token) {
		return nil, status.Error(codes.Unauthenticated, "Jwt is missing")
	}
	return handler(ctx, req)
}

func (f *fakeShop) Register(_ context.Context, r *userv1.RegisterRequest) (*userv1.RegisterResponse, error) {
	return &userv1.RegisterResponse{User: &userv1.User{UserId: "u-1", Email: r.GetEmail()}}, nil
}

func (f *fakeShop) Login(_ context.Context, r *userv1.LoginRequest) (*userv1.LoginResponse, error) {
	return &userv1.LoginResponse{
		AccessToken: token, TokenType: "Bearer", ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
		User: &userv1.User{UserId: "u-1", Email: r.GetEmail()},
	}, nil
}

func (f *fakeShop) ListProducts(context.Context, *inventoryv1.ListProductsRequest) (*inventoryv1.ListProductsResponse, error) {
	price := &commonv1.Money{AmountMinor: 1250, Currency: "EUR"}
	return &inventoryv1.ListProductsResponse{Products: []*inventoryv1.Product{
		{ProductId: "sold-out", Price: price},
		{ProductId: "widget", Name: "Widget", Price: price, Available: 5},
	}}, nil
}

func (f *fakeShop) PlaceOrder(_ context.Context, r *orderv1.PlaceOrderRequest) (*orderv1.PlaceOrderResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.order = &orderv1.Order{
		OrderId: "0b6c0f4e-7f2a-4c1e-9d3a-5a8e2f1b9c7d", Status: orderv1.OrderStatus_ORDER_STATUS_PENDING, IdempotencyKey: r.GetIdempotencyKey(),
		Lines: []*orderv1.OrderLine{{ProductId: r.GetLines()[0].GetProductId(), Quantity: r.GetLines()[0].GetQuantity()}},
		Total: &commonv1.Money{AmountMinor: 1250, Currency: "EUR"},
		Timeline: []*orderv1.TimelineEntry{
			{At: timestamppb.Now(), Step: "order.placed", Status: orderv1.OrderStatus_ORDER_STATUS_PENDING},
		},
	}
	return &orderv1.PlaceOrderResponse{Order: f.order}, nil
}

func (f *fakeShop) GetOrder(context.Context, *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.reads == 3 { // the saga ends while the client follows it
		f.order.Status = orderv1.OrderStatus_ORDER_STATUS_CONFIRMED
		f.order.Timeline = append(f.order.Timeline, &orderv1.TimelineEntry{
			At: timestamppb.Now(), Step: "order.confirmed", Status: orderv1.OrderStatus_ORDER_STATUS_CONFIRMED,
		})
	}
	return &orderv1.GetOrderResponse{Order: proto.Clone(f.order).(*orderv1.Order)}, nil
}

// start serves a fakeShop on a loopback port; serverValidates makes it answer bad
// requests the way the services do.
func start(t *testing.T, serverValidates bool) (*fakeShop, string) {
	t.Helper()
	shop := &fakeShop{validateErr: func(proto.Message) error { return nil }}
	if serverValidates {
		shop.validateErr = func(m proto.Message) error {
			if err := protovalidate.Validate(m); err != nil {
				st, _ := status.FromError(localInvalid(err))
				return status.ErrorProto(st.Proto()) // the same BadRequest, from the server
			}
			return nil
		}
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(shop.intercept))
	userv1.RegisterUserServiceServer(srv, shop)
	inventoryv1.RegisterInventoryServiceServer(srv, shop)
	orderv1.RegisterOrderServiceServer(srv, shop)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return shop, lis.Addr().String()
}

func dial(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := Dial(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestJourneyFollowsTheOrderUntilConfirmed(t *testing.T) {
	shop, addr := start(t, false)
	c := dial(t, Options{Addr: addr, Timeout: 5 * time.Second})
	var steps []string
	res, err := c.Run(context.Background(), Journey{
		Email: "ada@example.com", Password: "correct horse battery", Name: "Ada", Poll: time.Millisecond,
	}, func(step, _ string) { steps = append(steps, step) })
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Order.GetStatus(); got != orderv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Fatalf("status %v, want CONFIRMED", got)
	}
	if got := res.Order.GetLines()[0].GetProductId(); got != "widget" {
		t.Errorf("ordered %q, want the first product in stock", got)
	}
	if !strings.HasPrefix(res.Order.GetIdempotencyKey(), "shopctl-") {
		t.Errorf("idempotency key %q", res.Order.GetIdempotencyKey())
	}
	want := "register login products place status status"
	if got := strings.Join(steps, " "); got != want {
		t.Errorf("steps %q, want %q", got, want)
	}
	if len(shop.noDeadline) > 0 {
		t.Errorf("calls without a deadline: %v", shop.noDeadline)
	}
	if shop.longestLeft > 5*time.Second {
		t.Errorf("a call had %v left: the journey's 30s wait replaced the 5s call timeout", shop.longestLeft)
	}
}

func TestNoTokenIsUnauthenticated(t *testing.T) {
	_, addr := start(t, false)
	c := dial(t, Options{Addr: addr})
	_, err := c.Products(context.Background())
	if Code(err) != codes.Unauthenticated {
		t.Fatalf("err %v, want UNAUTHENTICATED", err)
	}
	if ExitCode(err) != 64+16 {
		t.Errorf("exit code %d, want 80 (grpcurl's)", ExitCode(err))
	}
}

func TestBadRequestIsCaughtBeforeSending(t *testing.T) {
	shop, addr := start(t, false)
	c := dial(t, Options{Addr: addr})
	_, err := c.Register(context.Background(), "not-an-email", "short", "")
	f, ok := Explain(err)
	if !ok || f.Code != "INVALID_ARGUMENT" {
		t.Fatalf("err %v, want INVALID_ARGUMENT", err)
	}
	fields := map[string]string{}
	for _, v := range f.Violations {
		fields[v.Field] = v.Description
	}
	if !strings.Contains(fields["email"], "[string.email]") || !strings.Contains(fields["password"], "[string.min_len]") {
		t.Errorf("violations %v", f.Violations)
	}
	if len(shop.calls) != 0 {
		t.Errorf("the bad request was sent: %v", shop.calls)
	}
}

func TestServerBadRequestDetailsAreDecoded(t *testing.T) {
	shop, addr := start(t, true)
	c := dial(t, Options{Addr: addr, Token: token, SkipValidation: true})
	_, err := c.Place(context.Background(), "k", []*orderv1.OrderLineInput{{ProductId: "widget", Quantity: 0}}, "")
	f, ok := Explain(err)
	if !ok || f.Code != "INVALID_ARGUMENT" || len(shop.calls) != 1 {
		t.Fatalf("err %v after %d calls, want INVALID_ARGUMENT from the server", err, len(shop.calls))
	}
	got := map[string]bool{}
	for _, v := range f.Violations {
		got[v.Field] = true
	}
	if !got["idempotency_key"] || !got["lines[0].quantity"] {
		t.Errorf("violations %v", f.Violations)
	}
}

func TestStepErrorsKeepTheirStatus(t *testing.T) {
	err := &StepError{"place order", status.Error(codes.FailedPrecondition, "out of stock")}
	f, ok := Explain(err)
	if !ok || f.Step != "place order" || f.Code != "FAILED_PRECONDITION" || f.Message != "out of stock" {
		t.Errorf("Explain = %+v, %v", f, ok)
	}
	if ExitCode(err) != 64+9 {
		t.Errorf("exit code %d", ExitCode(err))
	}
}

func TestParseLine(t *testing.T) {
	for in, want := range map[string]*orderv1.OrderLineInput{
		"widget=3": {ProductId: "widget", Quantity: 3},
		"widget":   {ProductId: "widget", Quantity: 1},
	} {
		got, err := ParseLine(in)
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("ParseLine(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseLine("widget=many"); ExitCode(err) != 2 {
		t.Errorf("a bad quantity is a usage error, got %v", err)
	}
}

func TestFormatMoney(t *testing.T) {
	for amount, want := range map[int64]string{1250: "12.50 EUR", 5: "0.05 EUR", 0: "0.00 EUR"} {
		if got := FormatMoney(&commonv1.Money{AmountMinor: amount, Currency: "EUR"}); got != want {
			t.Errorf("FormatMoney(%d) = %q, want %q", amount, got, want)
		}
	}
}
