package shopctl

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	inventoryv1 "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/gen/go/shop/order/v1"
	userv1 "github.com/shopmesh/shopmesh/gen/go/shop/user/v1"
)

// Progress hears about each step of a journey as it happens; nil hears nothing.
type Progress func(step, detail string)

func (p Progress) report(step, format string, args ...any) {
	if p != nil {
		p(step, fmt.Sprintf(format, args...))
	}
}

// Final reports whether an order's saga has ended.
func Final(s orderv1.OrderStatus) bool {
	return s == orderv1.OrderStatus_ORDER_STATUS_CONFIRMED ||
		s == orderv1.OrderStatus_ORDER_STATUS_CANCELLED
}

// NewIdempotencyKey makes a key for PlaceOrder: a retry with the same key places nothing
// twice, so the key is chosen once per order, before the first attempt.
func NewIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return "shopctl-" + hex.EncodeToString(b)
}

// ParseLine reads an order line written as PRODUCT=QUANTITY (or PRODUCT, for one).
func ParseLine(s string) (*orderv1.OrderLineInput, error) {
	product, qty, found := strings.Cut(s, "=")
	quantity := 1
	if found {
		n, err := strconv.Atoi(qty)
		if err != nil {
			return nil, UsageError(fmt.Sprintf("line %q: quantity %q is not a whole number", s, qty))
		}
		quantity = n
	}
	// The range is left to protovalidate and the server: they explain it better.
	return &orderv1.OrderLineInput{ProductId: product, Quantity: int32(quantity)}, nil
}

// Register creates a user.
func (c *Client) Register(ctx context.Context, email, password, name string) (*userv1.User, error) {
	reply, err := c.Users.Register(ctx, &userv1.RegisterRequest{Email: email, Password: password, Name: name})
	if err != nil {
		return nil, err
	}
	return reply.GetUser(), nil
}

// Login signs in and makes the client send the new token from now on.
func (c *Client) Login(ctx context.Context, email, password string) (*userv1.LoginResponse, error) {
	reply, err := c.Users.Login(ctx, &userv1.LoginRequest{Email: email, Password: password})
	if err != nil {
		return nil, err
	}
	c.SetToken(reply.GetAccessToken())
	return reply, nil
}

// Products lists every product, page by page.
func (c *Client) Products(ctx context.Context) ([]*inventoryv1.Product, error) {
	var products []*inventoryv1.Product
	token := ""
	for {
		reply, err := c.Inventory.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			return nil, err
		}
		products = append(products, reply.GetProducts()...)
		token = reply.GetNextPageToken()
		if token == "" {
			return products, nil
		}
	}
}

// Place places an order; key makes a retry of the same order harmless.
func (c *Client) Place(ctx context.Context, key string, lines []*orderv1.OrderLineInput, card string) (*orderv1.Order, error) {
	reply, err := c.Orders.PlaceOrder(ctx, &orderv1.PlaceOrderRequest{
		IdempotencyKey: key,
		Lines:          lines,
		PaymentCard:    card,
	})
	if err != nil {
		return nil, err
	}
	return reply.GetOrder(), nil
}

// Order reads one order with its saga timeline.
func (c *Client) Order(ctx context.Context, orderID string) (*orderv1.Order, error) {
	reply, err := c.Orders.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: orderID})
	if err != nil {
		return nil, err
	}
	return reply.GetOrder(), nil
}

// Follow reads the order every interval until its saga ends (CONFIRMED or CANCELLED)
// or ctx ends; each read is a call with its own deadline.
func (c *Client) Follow(ctx context.Context, orderID string, interval time.Duration, progress Progress) (*orderv1.Order, error) {
	var last orderv1.OrderStatus
	started := time.Now()
	for {
		order, err := c.Order(ctx, orderID)
		if err != nil {
			if ctx.Err() != nil && last != 0 {
				return nil, status.Errorf(codes.DeadlineExceeded,
					"order %s still %s after %s", orderID, StatusName(last), time.Since(started).Round(time.Millisecond))
			}
			return nil, err
		}
		if order.GetStatus() != last {
			last = order.GetStatus()
			progress.report("status", "%s after %s", StatusName(last), time.Since(started).Round(time.Millisecond))
		}
		if Final(order.GetStatus()) {
			return order, nil
		}
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded,
				"order %s still %s after %s", orderID, StatusName(last), time.Since(started).Round(time.Millisecond))
		case <-time.After(interval):
		}
	}
}

// StepError says which step of a journey failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }

func (e *StepError) Unwrap() error { return e.Err }

// Journey is everything one customer does, in order.
type Journey struct {
	Email, Password, Name string
	// Lines to order; none orders one of the first product in stock.
	Lines []*orderv1.OrderLineInput
	// Card pays for the order; empty uses the shop's default test card.
	Card string
	// IdempotencyKey for PlaceOrder; empty makes a new one.
	IdempotencyKey string
	// Poll is how often Follow reads the order (default 200ms).
	Poll time.Duration
	// Wait bounds the wait for the saga to end (default 30s).
	Wait time.Duration
}

// JourneyResult is what the journey saw.
type JourneyResult struct {
	User     *userv1.User
	Products []*inventoryv1.Product
	Order    *orderv1.Order
}

// Run registers (an existing email is fine: the journey can run again), logs in, lists
// the products, places the order and follows it until its saga ends.
func (c *Client) Run(ctx context.Context, j Journey, progress Progress) (*JourneyResult, error) {
	res := &JourneyResult{}
	user, err := c.Register(ctx, j.Email, j.Password, j.Name)
	switch {
	case err == nil:
		progress.report("register", "%s is user %s", user.GetEmail(), user.GetUserId())
	case Code(err) == codes.AlreadyExists:
		progress.report("register", "%s is already registered", j.Email)
	default:
		return nil, &StepError{"register", err}
	}

	login, err := c.Login(ctx, j.Email, j.Password)
	if err != nil {
		return nil, &StepError{"login", err}
	}
	res.User = login.GetUser()
	progress.report("login", "token for user %s, expires %s",
		res.User.GetUserId(), login.GetExpiresAt().AsTime().Format(time.RFC3339))

	if res.Products, err = c.Products(ctx); err != nil {
		return nil, &StepError{"list products", err}
	}
	progress.report("products", "%d: %s", len(res.Products), ProductSummary(res.Products))

	lines := j.Lines
	if len(lines) == 0 {
		for _, p := range res.Products {
			if p.GetAvailable() > 0 {
				lines = []*orderv1.OrderLineInput{{ProductId: p.GetProductId(), Quantity: 1}}
				break
			}
		}
		if len(lines) == 0 {
			return nil, &StepError{"place order", errors.New("no product is in stock")}
		}
	}
	key := j.IdempotencyKey
	if key == "" {
		key = NewIdempotencyKey()
	}
	placed, err := c.Place(ctx, key, lines, j.Card)
	if err != nil {
		return nil, &StepError{"place order", err}
	}
	progress.report("place", "order %s (key %s): %s, %s",
		placed.GetOrderId(), key, FormatMoney(placed.GetTotal()), StatusName(placed.GetStatus()))

	poll, wait := j.Poll, j.Wait
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	if wait <= 0 {
		wait = 30 * time.Second
	}
	followCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if res.Order, err = c.Follow(followCtx, placed.GetOrderId(), poll, progress); err != nil {
		return nil, &StepError{"follow order", err}
	}
	return res, nil
}
