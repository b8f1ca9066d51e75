using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Nbd.Tests.Protocol;

// Byte vectors follow doc/proto.md, "Request message", "Simple reply message", "Structured reply chunk message"
// and "Structured reply types".
public sealed class TransmissionCodecTests
{
    private const ulong Cookie = 0x0102030405060708;

    // ---------------------------------------------------------------- request

    [Fact]
    public void Request_is_28_bytes_magic_flags_type_cookie_offset_length()
    {
        var buffer = new byte[NbdSizes.RequestHeader];

        NbdTransmissionCodec.WriteRequest(buffer, new NbdRequestHeader(NbdCommandFlags.Fua, NbdCommand.Write, Cookie, 0x1_0000_1000, 0x200));

        Assert.Equal(Wire.Hex("25609513 0001 0001 0102030405060708 0000000100001000 00000200"), buffer);
    }

    [Fact]
    public void Block_status_request_with_req_one_encodes_flag_bit_3_and_type_7()
    {
        var buffer = new byte[NbdSizes.RequestHeader];

        NbdTransmissionCodec.WriteRequest(buffer, new NbdRequestHeader(NbdCommandFlags.RequestOne, NbdCommand.BlockStatus, 1, 0, 0xffff_ffff));

        Assert.Equal(Wire.Hex("25609513 0008 0007 0000000000000001 0000000000000000 ffffffff"), buffer);
    }

    [Fact]
    public void Request_decodes_and_every_prefix_needs_more()
    {
        var source = Wire.Hex("25609513 0010 0006 0102030405060708 ffffffffffff0000 00100000 cafe");
        for (var length = 0; length < NbdSizes.RequestHeader; length++)
        {
            Assert.False(NbdTransmissionCodec.TryReadRequest(source.AsSpan(0, length), out var partial), $"prefix of {length} bytes");
            Assert.Equal(default, partial);
        }

        Assert.True(NbdTransmissionCodec.TryReadRequest(source, out var request));
        Assert.Equal(new NbdRequestHeader(NbdCommandFlags.FastZero, NbdCommand.WriteZeroes, Cookie, 0xffff_ffff_ffff_0000, 0x10_0000), request);
    }

    [Theory]
    [InlineData("12560953")] // the historic request magic (reserved)
    [InlineData("25609514")] // nbd-server's transaction log magic (reserved)
    [InlineData("67446698")] // a reply magic where a request belongs
    public void Request_with_a_wrong_magic_is_rejected_as_soon_as_4_bytes_arrive(string magic)
    {
        var source = Wire.Hex($"{magic} 0000 0000 0000000000000001 0000000000000000 00000200");

        Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.TryReadRequest(source.AsSpan(0, 4), out _));
        Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.TryReadRequest(source, out _));
    }

    // ---------------------------------------------------------------- simple reply

    [Fact]
    public void Simple_reply_is_16_bytes_magic_error_cookie()
    {
        var buffer = new byte[NbdSizes.SimpleReplyHeader];

        NbdTransmissionCodec.WriteSimpleReply(buffer, Cookie, NbdErrorCode.IOError);

        Assert.Equal(Wire.Hex("67446698 00000005 0102030405060708"), buffer);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Simple_reply_decodes_with_or_without_structured_replies(bool structured)
    {
        var source = Wire.Hex("67446698 0000004b 0102030405060708 aabbccdd");

        Assert.True(NbdTransmissionCodec.TryReadReplyHeader(source, structured, out var header, out var headerLength));

        Assert.Equal(NbdSizes.SimpleReplyHeader, headerLength);
        Assert.Equal(NbdReplyKind.Simple, header.Kind);
        Assert.Equal(Cookie, header.Cookie);
        Assert.Equal(NbdErrorCode.Overflow, header.Error);
        Assert.True(header.IsDone);
        Assert.False(header.IsErrorChunk);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Every_prefix_of_a_simple_reply_needs_more(bool structured)
    {
        var source = Wire.Hex("67446698 00000000 0102030405060708");
        for (var length = 0; length < source.Length; length++)
        {
            Assert.False(NbdTransmissionCodec.TryReadReplyHeader(source.AsSpan(0, length), structured, out var header, out var headerLength), $"prefix of {length} bytes");
            Assert.Equal(0, headerLength);
            Assert.Equal(default, header);
        }
    }

    // ---------------------------------------------------------------- structured chunk header

    [Fact]
    public void Structured_chunk_header_is_20_bytes_magic_flags_type_cookie_length()
    {
        var buffer = new byte[NbdSizes.StructuredReplyHeader];

        NbdTransmissionCodec.WriteStructuredHeader(buffer, NbdReplyFlags.Done, NbdReplyChunkType.OffsetData, Cookie, 0x1008);

        Assert.Equal(Wire.Hex("668e33ef 0001 0001 0102030405060708 00001008"), buffer);
    }

    [Fact]
    public void Structured_chunk_header_decodes_and_every_prefix_needs_more()
    {
        var source = Wire.Hex("668e33ef 0000 8002 0102030405060708 00000016 00000005");
        for (var length = 0; length < NbdSizes.StructuredReplyHeader; length++)
        {
            Assert.False(NbdTransmissionCodec.TryReadReplyHeader(source.AsSpan(0, length), structuredNegotiated: true, out _, out var headerLength), $"prefix of {length} bytes");
            Assert.Equal(0, headerLength);
        }

        Assert.True(NbdTransmissionCodec.TryReadReplyHeader(source, structuredNegotiated: true, out var header, out var consumed));

        Assert.Equal(NbdSizes.StructuredReplyHeader, consumed);
        Assert.Equal(new NbdReplyHeader(NbdReplyKind.Structured, Cookie, NbdErrorCode.None, NbdReplyFlags.None, NbdReplyChunkType.ErrorOffset, 0x16), header);
        Assert.False(header.IsDone);
        Assert.True(header.IsErrorChunk);
    }

    [Theory]
    [InlineData("0001", "0000", true, false)] // NONE with DONE
    [InlineData("8001", "0001", true, false)] // unknown flag bits are kept; DONE still read
    [InlineData("0000", "8001", false, true)] // NBD_REPLY_TYPE_ERROR
    [InlineData("0000", "8abc", false, true)] // unknown type in the error category
    [InlineData("0000", "0005", false, false)] // BLOCK_STATUS
    [InlineData("0000", "7fff", false, false)] // unknown, not an error chunk
    public void Structured_chunk_flags_and_type_classify_done_and_error_chunks(string flags, string type, bool done, bool error)
    {
        Assert.True(NbdTransmissionCodec.TryReadReplyHeader(Wire.Hex($"668e33ef {flags} {type} 0102030405060708 00000000"), true, out var header, out _));

        Assert.Equal(done, header.IsDone);
        Assert.Equal(error, header.IsErrorChunk);
    }

    [Fact]
    public void Structured_chunk_without_structured_replies_is_rejected_once_its_magic_arrives()
    {
        var source = Wire.Hex("668e33ef 0001 0000 0102030405060708 00000000");

        Assert.False(NbdTransmissionCodec.TryReadReplyHeader(source.AsSpan(0, 3), structuredNegotiated: false, out _, out _));
        var e = Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.TryReadReplyHeader(source.AsSpan(0, 4), structuredNegotiated: false, out _, out _));
        Assert.Contains("structured", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Extended_reply_magic_is_rejected_because_extended_headers_are_never_negotiated(bool structured)
    {
        // The 32-byte extended reply header: magic, flags, type, cookie, offset, 64-bit length.
        var source = Wire.Hex("6e8a278c 0001 0000 0102030405060708 0000000000000000 0000000000000000");

        var e = Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.TryReadReplyHeader(source.AsSpan(0, 4), structured, out _, out _));
        Assert.Contains("extended", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("96744668")] // historic reply magic
    [InlineData("25609513")] // a request echoed back
    [InlineData("98664467")] // simple reply magic, little-endian
    [InlineData("00000000")]
    public void Reply_with_a_wrong_magic_is_rejected(string magic)
    {
        var source = Wire.Hex($"{magic} 00000000 0102030405060708 00000000");

        var e = Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.TryReadReplyHeader(source.AsSpan(0, 4), true, out _, out _));
        Assert.Contains($"0x{magic}", e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- OFFSET_DATA

    [Fact]
    public void Offset_data_payload_starts_with_the_64_bit_offset()
    {
        var prefix = new byte[8];

        NbdTransmissionCodec.WriteOffsetDataOffset(prefix, 0x0000_00ff_0000_0200);

        Assert.Equal(Wire.Hex("000000ff00000200"), prefix);
        Assert.Equal(0x0000_00ff_0000_0200UL, NbdTransmissionCodec.ReadOffsetDataOffset(Wire.Hex("000000ff00000200 41"), 9));
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(7u)]
    [InlineData(8u)] // an offset with no data describes no bytes
    public void Offset_data_shorter_than_9_bytes_is_rejected(uint chunkLength)
    {
        var e = Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.ReadOffsetDataOffset(new byte[8], chunkLength));
        Assert.Contains("minimum of 9", e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- OFFSET_HOLE

    [Fact]
    public void Offset_hole_is_12_bytes_offset_and_size()
    {
        var payload = new byte[12];

        NbdTransmissionCodec.WriteOffsetHole(payload, 0x2000, 0x1000);

        Assert.Equal(Wire.Hex("0000000000002000 00001000"), payload);
        Assert.Equal(0x2000UL, NbdTransmissionCodec.ParseOffsetHole(payload, out var size));
        Assert.Equal(0x1000u, size);
    }

    [Theory]
    [InlineData("")]
    [InlineData("0000000000002000 000010")] // 11 bytes
    [InlineData("0000000000002000 00001000 00")] // 13 bytes
    [InlineData("0000000000002000")] // offset only
    [InlineData("0000000000002000 00000000")] // zero-sized hole
    public void Offset_hole_with_a_wrong_length_or_zero_size_is_rejected(string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.ParseOffsetHole(Wire.Hex(payload), out _));
    }

    // ---------------------------------------------------------------- ERROR, ERROR_OFFSET

    [Fact]
    public void Error_chunk_is_error_message_length_message()
    {
        var payload = NbdTransmissionCodec.BuildErrorChunk(NbdErrorCode.IOError, "bad sector", null);

        Assert.Equal(Wire.Concat(Wire.Hex("00000005 000a"), "bad sector"u8.ToArray()), payload);
        Assert.Equal(new NbdErrorChunk(NbdErrorCode.IOError, "bad sector", null), NbdTransmissionCodec.ParseErrorChunk(payload, NbdReplyChunkType.Error));
    }

    [Fact]
    public void Error_offset_chunk_appends_the_64_bit_offset_after_the_message()
    {
        var payload = NbdTransmissionCodec.BuildErrorChunk(NbdErrorCode.IOError, "x", 0x1_0000_0000);

        Assert.Equal(Wire.Hex("00000005 0001 78 0000000100000000"), payload);
        Assert.Equal(new NbdErrorChunk(NbdErrorCode.IOError, "x", 0x1_0000_0000), NbdTransmissionCodec.ParseErrorChunk(payload, NbdReplyChunkType.ErrorOffset));
    }

    [Fact]
    public void Error_chunks_may_carry_no_message()
    {
        Assert.Equal(new NbdErrorChunk(NbdErrorCode.NoSpace, string.Empty, null), NbdTransmissionCodec.ParseErrorChunk(Wire.Hex("0000001c 0000"), NbdReplyChunkType.Error));
        Assert.Equal(new NbdErrorChunk(NbdErrorCode.NoSpace, string.Empty, 7UL), NbdTransmissionCodec.ParseErrorChunk(Wire.Hex("0000001c 0000 0000000000000007"), NbdReplyChunkType.ErrorOffset));
    }

    [Fact]
    public void Unknown_error_chunk_types_read_the_common_prefix_and_skip_their_own_fields()
    {
        var error = NbdTransmissionCodec.ParseErrorChunk(Wire.Hex("0000000c 0002 6f6f 0102030405"), (NbdReplyChunkType)0x8123);

        Assert.Equal(new NbdErrorChunk(NbdErrorCode.OutOfMemory, "oo", null), error);
    }

    [Fact]
    public void Error_messages_are_shown_leniently_but_never_with_NUL()
    {
        var error = NbdTransmissionCodec.ParseErrorChunk(Wire.Hex("00000005 0004 61 00 ff 62"), NbdReplyChunkType.Error);

        Assert.Equal("a\uFFFDb", error.Message);
    }

    [Theory]
    [InlineData("8001", "")] // shorter than 6
    [InlineData("8001", "00000005 00")]
    [InlineData("8001", "00000000 0000")] // error code 0
    [InlineData("8002", "00000000 0000 0000000000000000")]
    [InlineData("8001", "00000005 0010 73686f7274")] // message length over the payload
    [InlineData("8001", "00000005 0001")]
    [InlineData("8002", "00000005 0005 68656c6c6f 00000000000000")] // message fits but the offset is 7 bytes
    [InlineData("8002", "00000005 0000")] // ERROR_OFFSET without its offset
    [InlineData("8002", "00000005 0000 0000000000000001 00")] // ERROR_OFFSET with a byte too many
    [InlineData("8001", "00000005 0000 00")] // ERROR with trailing bytes
    [InlineData("8001", "00000005 0001 61 0000000000000001")] // ERROR carrying an offset it does not define
    [InlineData("8123", "00000005 0003 6161")] // unknown error type whose message overruns its chunk
    public void Malformed_error_chunks_are_rejected(string type, string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.ParseErrorChunk(Wire.Hex(payload), (NbdReplyChunkType)Convert.ToUInt16(type, 16)));
    }

    [Fact]
    public void Error_message_over_4096_bytes_is_rejected_even_when_the_chunk_holds_it()
    {
        var payload = Wire.Concat(Wire.Hex("00000005 1001"), Enumerable.Repeat((byte)'m', 4097).ToArray());

        var e = Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.ParseErrorChunk(payload, NbdReplyChunkType.Error));
        Assert.Contains("4096", e.Message, StringComparison.Ordinal);

        payload[5] = 0x00; // 0x1000 = 4096: the largest message allowed
        Assert.Equal(4096, NbdTransmissionCodec.ParseErrorChunk(payload.AsSpan(0, 6 + 4096), NbdReplyChunkType.Error).Message.Length);
    }

    // ---------------------------------------------------------------- BLOCK_STATUS

    [Fact]
    public void Block_status_is_context_id_then_length_flags_descriptors()
    {
        var payload = NbdTransmissionCodec.BuildBlockStatus(1, [new NbdBlockDescriptor(0x10000, 0), new NbdBlockDescriptor(0x20000, 3)]);

        Assert.Equal(Wire.Hex("00000001 00010000 00000000 00020000 00000003"), payload);

        Assert.Equal(1u, NbdTransmissionCodec.ParseBlockStatus(payload, out var descriptors));
        Assert.Equal(16, descriptors.Length);
        Assert.Equal(new NbdBlockDescriptor(0x10000, 0), NbdTransmissionCodec.ReadDescriptor(descriptors, 0));
        Assert.Equal(new NbdBlockDescriptor(0x20000, 3), NbdTransmissionCodec.ReadDescriptor(descriptors, 1));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(4)] // a context id and no descriptor (k = 0)
    [InlineData(8)]
    [InlineData(11)]
    [InlineData(13)]
    [InlineData(19)]
    [InlineData(21)]
    public void Block_status_whose_length_is_not_4_plus_a_positive_multiple_of_8_is_rejected(int length)
    {
        var e = Assert.Throws<NbdProtocolException>(() => NbdTransmissionCodec.ParseBlockStatus(new byte[length], out _));
        Assert.Contains($"length {length}", e.Message, StringComparison.Ordinal);
    }
}
