package rpc

import (
	"context"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/regcenter/registry/validate"
)

// Requests decode here, not in grpc-go: grpc-go answers any codec error
// with INTERNAL (rpc_util.go, recv), and a proto3 string field that holds
// invalid UTF-8 fails to decode, so a caller's bad input would look like a
// server fault. The services' handlers receive each request as the unknown
// fields of an emptypb.Empty, which keeps the bytes whatever they hold, and
// decode it themselves: a request that does not decode is INVALID_ARGUMENT,
// naming the field whose string is not UTF-8.

// decodingRequests returns a copy of sd whose handlers decode requests with
// s.decode.
func (s *Server) decodingRequests(sd *grpc.ServiceDesc) *grpc.ServiceDesc {
	out := *sd
	out.Methods = slices.Clone(sd.Methods)
	for i := range out.Methods {
		h := out.Methods[i].Handler
		out.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			return h(srv, ctx, func(m any) error { return s.decode(dec, m) }, ic)
		}
	}
	out.Streams = slices.Clone(sd.Streams)
	for i := range out.Streams {
		h := out.Streams[i].Handler
		out.Streams[i].Handler = func(srv any, stream grpc.ServerStream) error {
			if cs, ok := stream.(*checkedStream); ok {
				// Decode beneath the ACL check, which reads the request.
				cs.ServerStream = decodingStream{ServerStream: cs.ServerStream, s: s}
				return h(srv, cs)
			}
			return h(srv, decodingStream{ServerStream: stream, s: s})
		}
	}
	return &out
}

// decodingStream decodes the messages it receives with s.decode.
type decodingStream struct {
	grpc.ServerStream
	s *Server
}

func (d decodingStream) RecvMsg(m any) error { return d.s.decode(d.ServerStream.RecvMsg, m) }

// decode receives the next request with recv and decodes it into m.
// Errors of recv (io.EOF ends a stream) pass unchanged.
func (s *Server) decode(recv func(any) error, m any) error {
	var raw emptypb.Empty
	if err := recv(&raw); err != nil {
		return err
	}
	msg, ok := m.(proto.Message)
	if !ok {
		return s.toStatus(fmt.Errorf("rpc: cannot decode a request into %T", m))
	}
	b := raw.ProtoReflect().GetUnknown()
	if err := proto.Unmarshal(b, msg); err != nil {
		if field := invalidUTF8Field(b, msg.ProtoReflect().Descriptor()); field != "" {
			return s.toStatus(validate.FieldErrorf(field, "is not valid UTF-8"))
		}
		return s.toStatus(validate.FieldErrorf("request", "does not decode: %v", err))
	}
	return nil
}

// invalidUTF8Field returns the name (dotted, as the API names it) of the
// first string field of b, an encoded md, that is not valid UTF-8; "" if
// there is none or b is not well-formed.
func invalidUTF8Field(b []byte, md protoreflect.MessageDescriptor) string {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			return string(fd.Name())
		case fd.IsMap():
			// A map entry's key or value: name the map.
			if invalidUTF8Field(v, fd.Message()) != "" {
				return string(fd.Name())
			}
		case fd.Message() != nil:
			if sub := invalidUTF8Field(v, fd.Message()); sub != "" {
				return string(fd.Name()) + "." + sub
			}
		}
	}
	return ""
}

// invalidUTF8In is invalidUTF8Field for a message in memory.
func invalidUTF8In(m protoreflect.Message) string {
	var bad string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, e protoreflect.Value) bool {
				if invalidUTF8Value(fd.MapKey(), k.Value()) != "" || invalidUTF8Value(fd.MapValue(), e) != "" {
					bad = string(fd.Name())
				}
				return bad == ""
			})
		case fd.IsList():
			for i := 0; i < v.List().Len() && bad == ""; i++ {
				bad = invalidUTF8Value(fd, v.List().Get(i))
			}
		default:
			bad = invalidUTF8Value(fd, v)
		}
		return bad == ""
	})
	return bad
}

// invalidUTF8Value checks one value of fd (an element, for a list).
func invalidUTF8Value(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch {
	case fd.Kind() == protoreflect.StringKind && !utf8.ValidString(v.String()):
		return string(fd.Name())
	case fd.Message() != nil:
		if sub := invalidUTF8In(v.Message()); sub != "" {
			return string(fd.Name()) + "." + sub
		}
	}
	return ""
}

// CheckUTF8 wraps a connection to the registry's services so that a request
// holding a string that is not valid UTF-8 fails with INVALID_ARGUMENT,
// naming the field, instead of grpc-go's INTERNAL marshalling error. The
// HTTP gateway, whose path and query parameters reach the request
// unchecked, calls through it.
func CheckUTF8(cc grpc.ClientConnInterface) grpc.ClientConnInterface { return utf8Conn{cc} }

type utf8Conn struct{ cc grpc.ClientConnInterface }

func (c utf8Conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if err := checkUTF8(args); err != nil {
		return err
	}
	return c.cc.Invoke(ctx, method, args, reply, opts...)
}

func (c utf8Conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	st, err := c.cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		return nil, err
	}
	return utf8Stream{st}, nil
}

type utf8Stream struct{ grpc.ClientStream }

func (s utf8Stream) SendMsg(m any) error {
	if err := checkUTF8(m); err != nil {
		return err
	}
	return s.ClientStream.SendMsg(m)
}

// checkUTF8 returns an INVALID_ARGUMENT status naming the field of m that
// holds invalid UTF-8, or nil.
func checkUTF8(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	if field := invalidUTF8In(msg.ProtoReflect()); field != "" {
		// The gateway's side of the boundary: the status the services
		// would answer, were the request able to reach them.
		return status.Error(codes.InvalidArgument, validate.FieldErrorf(field, "is not valid UTF-8").Error())
	}
	return nil
}
