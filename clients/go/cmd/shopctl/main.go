// Command shopctl talks gRPC to the shop's gateway: register, log in, list products,
// place an order and follow its saga, with the code generated from proto/.
//
//	shopctl journey -email ada@example.com -password 'correct horse battery'
//	shopctl -token "$TOKEN" -o json order 0b6c...
//
// Every call carries a deadline (-timeout) and, once there is one, the bearer token.
// Requests are checked against their protovalidate rules before they are sent
// (-validate=false sends them as they are). A failed call exits with 64 + its gRPC
// code, as grpcurl does.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	inventoryv1 "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/gen/go/shop/order/v1"

	"github.com/shopmesh/shopmesh/clients/go/internal/shopctl"
)

const usage = `usage: shopctl [flags] COMMAND [command flags]

commands:
  journey   register (or reuse) a user, log in, list products, place an order,
            follow it until CONFIRMED or CANCELLED and print its saga timeline
  register  -email E -password P -name N
  login     -email E -password P (prints the access token)
  products  list the products
  place     -line PRODUCT=QTY ... [-key K] [-card C]
  order     ORDER_ID
  follow    [-wait D] ORDER_ID

flags:
`

// cli is the parsed global flags plus where output goes.
type cli struct {
	opts   shopctl.Options
	output string
	stdout io.Writer
	stderr io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("shopctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&c.opts.Addr, "addr", envOr("SHOPCTL_ADDR", "127.0.0.1:8080"), "gateway `host:port` ($SHOPCTL_ADDR)")
	fs.StringVar(&c.opts.Token, "token", os.Getenv("SHOPCTL_TOKEN"), "bearer `token` ($SHOPCTL_TOKEN)")
	fs.DurationVar(&c.opts.Timeout, "timeout", shopctl.DefaultTimeout, "deadline of each call")
	fs.StringVar(&c.output, "o", "text", "output: text, json (protojson) or binpb (serialized protobuf)")
	validate := fs.Bool("validate", true, "check requests against their protovalidate rules before sending")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c.opts.SkipValidation = !*validate
	if fs.NArg() == 0 || (c.output != "text" && c.output != "json" && c.output != "binpb") {
		fs.Usage()
		return 2
	}
	command, rest := fs.Arg(0), fs.Args()[1:]
	err := c.dispatch(ctx, command, rest)
	if err != nil {
		c.fail(command, err)
	}
	return shopctl.ExitCode(err)
}

func (c *cli) dispatch(ctx context.Context, command string, args []string) error {
	fs := flag.NewFlagSet("shopctl "+command, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	var (
		email    = fs.String("email", "", "the user's email")
		password = fs.String("password", "", "the user's password")
		name     = fs.String("name", "", "the user's name (register, journey)")
		key      = fs.String("key", "", "idempotency key (default: a new one)")
		card     = fs.String("card", "", "payment card number (default: the test card)")
		wait     = fs.Duration("wait", 30*time.Second, "how long to wait for the saga to end")
		lines    lineList
	)
	fs.Var(&lines, "line", "order line `PRODUCT=QTY` (repeat for more lines)")
	if err := fs.Parse(args); err != nil {
		return shopctl.UsageError("") // the flag package has said what is wrong
	}
	client, err := shopctl.Dial(c.opts)
	if err != nil {
		return err
	}
	defer client.Close()

	switch command {
	case "journey":
		if *name == "" {
			*name = strings.Split(*email, "@")[0]
		}
		res, err := client.Run(ctx, shopctl.Journey{
			Email: *email, Password: *password, Name: *name,
			Lines: lines, Card: *card, IdempotencyKey: *key, Wait: *wait,
		}, c.progress)
		if err != nil {
			return err
		}
		return c.print(res.Order, func(w io.Writer) error { return shopctl.WriteOrder(w, res.Order) })
	case "register":
		user, err := client.Register(ctx, *email, *password, *name)
		if err != nil {
			return err
		}
		return c.print(user, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "registered %s as user %s\n", user.GetEmail(), user.GetUserId())
			return err
		})
	case "login":
		reply, err := client.Login(ctx, *email, *password)
		if err != nil {
			return err
		}
		// Text is the bare token, for `export SHOPCTL_TOKEN=$(shopctl login ...)`.
		return c.print(reply, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, reply.GetAccessToken())
			return err
		})
	case "products":
		products, err := client.Products(ctx)
		if err != nil {
			return err
		}
		all := &inventoryv1.ListProductsResponse{Products: products}
		return c.print(all, func(w io.Writer) error { return shopctl.WriteProducts(w, products) })
	case "place":
		if *key == "" {
			*key = shopctl.NewIdempotencyKey()
		}
		order, err := client.Place(ctx, *key, lines, *card)
		if err != nil {
			return err
		}
		return c.print(order, func(w io.Writer) error { return shopctl.WriteOrder(w, order) })
	case "order", "follow":
		if fs.NArg() != 1 {
			return shopctl.UsageError(command + " needs one ORDER_ID")
		}
		var order *orderv1.Order
		if command == "order" {
			order, err = client.Order(ctx, fs.Arg(0))
		} else {
			followCtx, cancel := context.WithTimeout(ctx, *wait)
			defer cancel()
			order, err = client.Follow(followCtx, fs.Arg(0), 200*time.Millisecond, c.progress)
		}
		if err != nil {
			return err
		}
		return c.print(order, func(w io.Writer) error { return shopctl.WriteOrder(w, order) })
	default:
		return shopctl.UsageError(fmt.Sprintf("unknown command %q (see shopctl -h)", command))
	}
}

// print writes msg in the chosen output format; text uses the given writer function.
func (c *cli) print(msg proto.Message, text func(io.Writer) error) error {
	switch c.output {
	case "json":
		b, err := protojson.MarshalOptions{Multiline: true}.Marshal(msg)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.stdout, string(b))
		return err
	case "binpb":
		// Deterministic, so two clients' bytes for equal messages can be compared.
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(b)
		return err
	default:
		return text(c.stdout)
	}
}

// progress reports journey steps: on stdout for people, on stderr when stdout is data.
func (c *cli) progress(step, detail string) {
	w := c.stdout
	if c.output != "text" {
		w = c.stderr
	}
	fmt.Fprintf(w, "%-9s %s\n", step, detail)
}

// fail reports err on stderr: as JSON with -o json, else as text.
func (c *cli) fail(command string, err error) {
	f, isRPC := shopctl.Explain(err)
	if !isRPC {
		if err.Error() != "" {
			fmt.Fprintf(c.stderr, "shopctl %s: %v\n", command, err)
		}
		return
	}
	if c.output == "json" {
		b, _ := json.Marshal(f)
		fmt.Fprintln(c.stderr, string(b))
		return
	}
	if f.Step != "" {
		fmt.Fprintf(c.stderr, "shopctl %s: %s: ", command, f.Step)
	} else {
		fmt.Fprintf(c.stderr, "shopctl %s: ", command)
	}
	shopctl.WriteFailure(c.stderr, f)
}

// lineList collects repeated -line PRODUCT=QTY flags.
type lineList []*orderv1.OrderLineInput

func (l *lineList) String() string { return fmt.Sprint(len(*l), " lines") }

func (l *lineList) Set(s string) error {
	line, err := shopctl.ParseLine(s)
	if err != nil {
		return err
	}
	*l = append(*l, line)
	return nil
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
