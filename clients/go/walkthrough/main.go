// Command walkthrough is a Go caller of the commerce services, through code generated
// from protos/ by `npx buf generate --template buf.gen.go.yaml` and grpc-go.
//
// It walks one customer through the API and checks every answer: creates the
// customer and reads it back, places an order for it (retried with the same
// request_id), reads the order with its embedded customer, places a second one,
// pages through the customer's orders, and decodes the error details of two failures.
//
//	scripts/setup-go && npx buf generate --template buf.gen.go.yaml
//	cd clients/go/walkthrough
//	GOPATH=$PWD/../gopath:/usr/share/gocode GO111MODULE=off go build
//	COMMERCE_TARGET=127.0.0.1:50051 COMMERCE_STORE_ID=1 ./walkthrough
//
// It prints one JSON line of what it saw, and exits 1 at the first check that fails.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	customersv1 "example.com/commerce/gen/go/commerce/customers/v1"
	ordersv1 "example.com/commerce/gen/go/commerce/orders/v1"
)

// Every call carries a deadline: the server bounds its own work by it too.
const callTimeout = 10 * time.Second

// An id no store hands out before it has that many customers.
const unknownCustomerID int64 = 9_000_000_000_000_000_000

// report is what the walkthrough saw, printed as one JSON line. int64 values are
// strings, as in protobuf's JSON mapping: JSON numbers lose them past 2^53.
type report struct {
	CustomerID            string   `json:"customerId"`
	Email                 string   `json:"email"`
	OrderIDs              []string `json:"orderIds"`
	OrderNumber           string   `json:"orderNumber"`
	TotalMinor            string   `json:"totalMinor"`
	InvalidArgumentFields []string `json:"invalidArgumentFields"`
	NotFoundReason        string   `json:"notFoundReason"`
	NotFoundResource      string   `json:"notFoundResource"`
}

// checkFailed is what check panics with, so that main can tell a failed check
// from a bug in this program.
type checkFailed struct{ message string }

func check(ok bool, format string, args ...interface{}) {
	if !ok {
		panic(checkFailed{fmt.Sprintf(format, args...)})
	}
}

// must returns a call's result; a call that fails where it should not is a failed check.
func must[T any](value T, err error) T {
	check(err == nil, "unexpected error: %v", err)
	return value
}

// newRequestID is a random (version 4) UUID, the form request_id takes.
func newRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// withDeadline gives every call that has no deadline of its own one of callTimeout.
func withDeadline(
	ctx context.Context, method string, req, reply interface{},
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, callTimeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// failure is the status a call fails with; a failed check if it succeeds.
func failure(err error) *status.Status {
	check(err != nil, "the call was expected to fail")
	st, ok := status.FromError(err)
	check(ok, "not a gRPC status: %v", err)
	return st
}

type clients struct {
	customers      customersv1.CustomerServiceClient
	orders         ordersv1.OrderServiceClient
	customerOrders ordersv1.CustomerOrderServiceClient
}

func (c clients) walkThrough(storeID int64) report {
	ctx := context.Background() // the deadline of each call comes from withDeadline
	email := "go-" + newRequestID() + "@example.com"
	created := must(c.customers.CreateCustomer(ctx, &customersv1.CreateCustomerRequest{
		StoreId: storeID, Email: email, Password: "correct horse", FirstName: "Gopher", LastName: "Go",
	})).GetCustomer()
	check(created.GetEmail() == email, "CreateCustomer returns the customer")
	read := must(c.customers.GetCustomer(ctx, &customersv1.GetCustomerRequest{
		StoreId: storeID, CustomerId: created.GetCustomerId(),
	})).GetCustomer()
	check(read.GetEmail() == email && read.GetFirstName() == "Gopher", "GetCustomer reads it back: %v", read)

	placed, total := c.placeOrderTwice(ctx, storeID, created.GetCustomerId())
	c.readOrder(ctx, storeID, placed.GetOrderId(), email)

	second := must(c.orders.CreateOrder(ctx, &ordersv1.CreateOrderRequest{
		StoreId: storeID, CustomerId: created.GetCustomerId(), CurrencyCode: "EUR",
		RequestId: newRequestID(),
		LineItems: []*ordersv1.OrderLineItem{{Sku: "TEE-2", Name: "T-shirt", Quantity: 1, UnitPriceMinor: 2500}},
	})).GetOrder()
	history := c.orderHistory(ctx, storeID, created.GetCustomerId())
	check(reflect.DeepEqual(history, []int64{second.GetOrderId(), placed.GetOrderId()}),
		"ListCustomerOrders lists newest first, one per page: %v", history)

	fields := c.invalidArgumentFields(ctx, storeID)
	reason, resource := c.notFoundDetails(ctx, storeID)

	orderIDs := make([]string, len(history))
	for i, id := range history {
		orderIDs[i] = strconv.FormatInt(id, 10)
	}
	return report{
		CustomerID:            strconv.FormatInt(created.GetCustomerId(), 10),
		Email:                 email,
		OrderIDs:              orderIDs,
		OrderNumber:           placed.GetOrderNumber(),
		TotalMinor:            strconv.FormatInt(total, 10),
		InvalidArgumentFields: fields,
		NotFoundReason:        reason,
		NotFoundResource:      resource,
	}
}

// placeOrderTwice places one order and sends the same request again: the retry,
// carrying the same request_id, returns the first order instead of a second one.
func (c clients) placeOrderTwice(ctx context.Context, storeID, customerID int64) (*ordersv1.Order, int64) {
	request := &ordersv1.CreateOrderRequest{
		StoreId: storeID, CustomerId: customerID, CurrencyCode: "EUR", RequestId: newRequestID(),
		LineItems: []*ordersv1.OrderLineItem{
			{Sku: "MUG-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1299},
			{Sku: "TEE-2", Name: "T-shirt", Quantity: 1, UnitPriceMinor: 2500},
		},
	}
	placed := must(c.orders.CreateOrder(ctx, request)).GetOrder()
	retried := must(c.orders.CreateOrder(ctx, request)).GetOrder()
	check(retried.GetOrderId() == placed.GetOrderId(), "a retried CreateOrder creates nothing new")
	check(placed.GetTotalMinor() == 2*1299+2500, "the server computes the total: %d", placed.GetTotalMinor())
	check(placed.GetStatus() == ordersv1.OrderStatus_ORDER_STATUS_PENDING, "a new order is pending")
	return placed, placed.GetTotalMinor()
}

func (c clients) readOrder(ctx context.Context, storeID, orderID int64, email string) {
	order := must(c.orders.GetOrder(ctx, &ordersv1.GetOrderRequest{StoreId: storeID, OrderId: orderID})).GetOrder()
	check(order.GetCustomer().GetEmail() == email, "GetOrder embeds the commerce.customers.v1.Customer")
	var lines []string
	for _, item := range order.GetLineItems() {
		lines = append(lines, fmt.Sprintf("%d %s %d", item.GetLineNumber(), item.GetSku(), item.GetLineTotalMinor()))
	}
	check(reflect.DeepEqual(lines, []string{"1 MUG-1 2598", "2 TEE-2 2500"}), "line items: %v", lines)
	check(order.GetCreateTime().IsValid(), "orders carry their creation time")
	age := time.Since(order.GetCreateTime().AsTime())
	check(age > -10*time.Minute && age < 10*time.Minute, "create_time is now-ish: %v", order.GetCreateTime())
}

// orderHistory follows next_page_token to the end, one order per page.
func (c clients) orderHistory(ctx context.Context, storeID, customerID int64) []int64 {
	var ids []int64
	pageToken := ""
	for {
		page := must(c.customerOrders.ListCustomerOrders(ctx, &ordersv1.ListCustomerOrdersRequest{
			StoreId: storeID, CustomerId: customerID, PageSize: 1, PageToken: pageToken,
		}))
		for _, order := range page.GetOrders() {
			ids = append(ids, order.GetOrderId())
		}
		if pageToken = page.GetNextPageToken(); pageToken == "" {
			return ids
		}
	}
}

// invalidArgumentFields are the fields the BadRequest of an invalid create names.
func (c clients) invalidArgumentFields(ctx context.Context, storeID int64) []string {
	_, err := c.customers.CreateCustomer(ctx, &customersv1.CreateCustomerRequest{
		StoreId: storeID, Email: "not an email", Password: "short",
	})
	st := failure(err)
	check(st.Code() == codes.InvalidArgument, "an invalid create is INVALID_ARGUMENT, not %v", st.Code())
	fields := []string{}
	for _, detail := range st.Details() {
		if badRequest, ok := detail.(*errdetails.BadRequest); ok {
			for _, violation := range badRequest.GetFieldViolations() {
				fields = append(fields, violation.GetField())
			}
		}
	}
	sort.Strings(fields)
	check(reflect.DeepEqual(fields, []string{"email", "password"}), "BadRequest names the fields: %v", fields)
	return fields
}

// notFoundDetails are the ErrorInfo reason and the ResourceInfo name of a NOT_FOUND.
func (c clients) notFoundDetails(ctx context.Context, storeID int64) (string, string) {
	_, err := c.customers.GetCustomer(ctx, &customersv1.GetCustomerRequest{
		StoreId: storeID, CustomerId: unknownCustomerID,
	})
	st := failure(err)
	check(st.Code() == codes.NotFound, "an unknown customer is NOT_FOUND, not %v", st.Code())
	var info *errdetails.ErrorInfo
	var resource *errdetails.ResourceInfo
	for _, detail := range st.Details() {
		switch detail := detail.(type) {
		case *errdetails.ErrorInfo:
			info = detail
		case *errdetails.ResourceInfo:
			resource = detail
		}
	}
	check(info != nil && resource != nil, "NOT_FOUND carries ErrorInfo and ResourceInfo: %v", st.Details())
	check(info.GetDomain() == "commerce.customers.v1", "the ErrorInfo domain is the proto package: %v", info)
	check(info.GetReason() == "CUSTOMER_NOT_FOUND", "the reason: %v", info)
	wanted := fmt.Sprintf("stores/%d/customers/%d", storeID, unknownCustomerID)
	check(resource.GetResourceName() == wanted, "ResourceInfo names the customer: %v", resource)
	return info.GetReason(), resource.GetResourceName()
}

// setting is an environment variable, or its default when unset.
func setting(name, fallback string) string {
	if value, ok := os.LookupEnv(name); ok && value != "" {
		return value
	}
	return fallback
}

func run() (report, error) {
	// The Node client's form (http://host:port) is accepted too.
	target := strings.TrimPrefix(setting("COMMERCE_TARGET", "127.0.0.1:50051"), "http://")
	storeID, err := strconv.ParseInt(setting("COMMERCE_STORE_ID", "1"), 10, 64)
	if err != nil {
		return report{}, fmt.Errorf("COMMERCE_STORE_ID: %w", err)
	}
	// Plaintext, as the server serves by default; grpc.WithTransportCredentials for TLS.
	conn, err := grpc.Dial(target, grpc.WithInsecure(), grpc.WithUnaryInterceptor(withDeadline))
	if err != nil {
		return report{}, fmt.Errorf("connecting to %s: %w", target, err)
	}
	defer conn.Close()
	c := clients{
		customers:      customersv1.NewCustomerServiceClient(conn),
		orders:         ordersv1.NewOrderServiceClient(conn),
		customerOrders: ordersv1.NewCustomerOrderServiceClient(conn),
	}
	return c.walkThrough(storeID), nil
}

func main() {
	defer func() {
		if recovered := recover(); recovered != nil {
			if failed, ok := recovered.(checkFailed); ok {
				fmt.Fprintln(os.Stderr, "check failed:", failed.message)
				os.Exit(1)
			}
			panic(recovered)
		}
	}()
	seen, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	line, err := json.Marshal(seen)
	if err != nil {
		panic(err)
	}
	fmt.Println(string(line))
}
