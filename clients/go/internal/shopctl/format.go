package shopctl

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	commonv1 "github.com/shopmesh/shopmesh/gen/go/shop/common/v1"
	inventoryv1 "github.com/shopmesh/shopmesh/gen/go/shop/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/gen/go/shop/order/v1"
)

// FormatMoney writes integer minor units as "12.50 EUR" (every ISO 4217 currency the
// shop uses has two decimals).
func FormatMoney(m *commonv1.Money) string {
	amount := m.GetAmountMinor()
	sign := ""
	if amount < 0 {
		sign, amount = "-", -amount
	}
	return fmt.Sprintf("%s%d.%02d %s", sign, amount/100, amount%100, m.GetCurrency())
}

// StatusName is the order status without its enum prefix: CONFIRMED.
func StatusName(s orderv1.OrderStatus) string {
	return strings.TrimPrefix(s.String(), "ORDER_STATUS_")
}

// ProductSummary is a one-line list of products.
func ProductSummary(products []*inventoryv1.Product) string {
	parts := make([]string, 0, len(products))
	for _, p := range products {
		parts = append(parts, fmt.Sprintf("%s (%s, %d available)",
			p.GetProductId(), FormatMoney(p.GetPrice()), p.GetAvailable()))
	}
	return strings.Join(parts, ", ")
}

// WriteProducts prints products as a table.
func WriteProducts(w io.Writer, products []*inventoryv1.Product) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRODUCT\tNAME\tPRICE\tAVAILABLE")
	for _, p := range products {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", p.GetProductId(), p.GetName(), FormatMoney(p.GetPrice()), p.GetAvailable())
	}
	return tw.Flush()
}

// WriteOrder prints an order, its lines and its saga timeline (times in UTC).
func WriteOrder(w io.Writer, o *orderv1.Order) error {
	fmt.Fprintf(w, "order %s  %s  total %s\n", o.GetOrderId(), StatusName(o.GetStatus()), FormatMoney(o.GetTotal()))
	if o.GetCancelReason() != "" {
		fmt.Fprintf(w, "cancelled: %s\n", o.GetCancelReason())
	}
	lines := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, l := range o.GetLines() {
		fmt.Fprintf(lines, "  %d x %s\t%s\t%s\n", l.GetQuantity(), l.GetProductId(), FormatMoney(l.GetUnitPrice()), FormatMoney(l.GetLineTotal()))
	}
	if err := lines.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "saga timeline:")
	timeline := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range o.GetTimeline() {
		row := fmt.Sprintf("  %s\t%s\t%s", e.GetAt().AsTime().UTC().Format(time.TimeOnly+".000"), e.GetStep(), StatusName(e.GetStatus()))
		if e.GetDetail() != "" {
			row += "\t" + e.GetDetail()
		}
		fmt.Fprintln(timeline, row)
	}
	return timeline.Flush()
}

// WriteFailure prints a failed call: code, message and each field violation.
func WriteFailure(w io.Writer, f Failure) {
	fmt.Fprintf(w, "%s: %s\n", f.Code, f.Message)
	for _, v := range f.Violations {
		fmt.Fprintf(w, "  %s: %s\n", v.Field, v.Description)
	}
}
