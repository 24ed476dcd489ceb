// An in-memory SpecProvider on grpc-go, to measure spec-provider against what a Go server of
// the same contract costs (issue 25; docs/benchmarks-history.md, "The seventh December round").
// It is not part of the service, and no build or test of the service needs it.
//
// It answers GetImageSpec (for `ws-hit`, the bytes spec-provider answers for it, asked of
// spec-provider at start; every other id is NOT_FOUND with spec-provider's sentence) and
// Health/Check (SERVING). The handlers read and write protobuf by hand through a pass-through
// codec, so it does less per call than a server on generated code would. Built with Debian's Go
// and grpc-go, without downloading modules:
//
//	apt-get install golang-go golang-google-grpc-dev
//	mkdir -p /tmp/grpc-go/src/specgo && cp scripts/grpc-go/main.go /tmp/grpc-go/src/specgo/
//	cd /tmp/grpc-go/src/specgo && GO111MODULE=off GOPATH=/tmp/grpc-go:/usr/share/gocode go build -o /tmp/grpc-go/specgo .
//	/tmp/grpc-go/specgo 127.0.0.1:18090 SPEC_PROVIDER_HOST:PORT
//
// scripts/grpc-go/compare.sh drives both servers with h2load.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// raw passes message bytes through: the handlers read and write protobuf by hand.
type raw struct{}

func (raw) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (raw) Name() string { return "proto" }

var specs = map[string][]byte{}
var serving = []byte{0x08, 0x01}

// id reads field 1 (a string) of a GetImageSpecRequest.
func id(msg []byte) string {
	if len(msg) < 2 || msg[0] != 0x0a {
		return ""
	}
	n, i := 0, 1
	for shift := 0; i < len(msg); shift += 7 {
		b := msg[i]
		i++
		n |= int(b&0x7f) << shift
		if b < 0x80 {
			break
		}
	}
	if i+n > len(msg) {
		return ""
	}
	return string(msg[i : i+n])
}

func getImageSpec(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	key := id(in)
	if answer, ok := specs[key]; ok {
		return &answer, nil
	}
	return nil, status.Errorf(codes.NotFound, "no spec with id %q (it was never stored, was deleted, or has expired)", key)
}

func check(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return &serving, nil
}

// service is the handler type of the hand-written service descriptions.
type service interface{}

// fetch asks spec-provider at addr for the answer to GetImageSpec of key, as its bytes.
func fetch(addr, key string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	request := append([]byte{0x0a, byte(len(key))}, key...)
	var answer []byte
	err = conn.Invoke(ctx, "/registryfacade.SpecProvider/GetImageSpec", &request, &answer)
	return answer, err
}

func main() {
	encoding.RegisterCodec(raw{})
	answer, err := fetch(os.Args[2], "ws-hit")
	if err != nil {
		panic(err)
	}
	specs["ws-hit"] = answer
	lis, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		panic(err)
	}
	server := grpc.NewServer()
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "registryfacade.SpecProvider",
		HandlerType: (*service)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "GetImageSpec", Handler: getImageSpec}},
	}, struct{}{})
	server.RegisterService(&grpc.ServiceDesc{
		ServiceName: "grpc.health.v1.Health",
		HandlerType: (*service)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: check}},
	}, struct{}{})
	fmt.Println("serving on", lis.Addr())
	panic(server.Serve(lis))
}
