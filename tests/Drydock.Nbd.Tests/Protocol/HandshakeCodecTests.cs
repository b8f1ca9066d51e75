using System.Buffers;
using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Nbd.Tests.Protocol;

// Byte vectors follow doc/proto.md, "Newstyle negotiation", "Fixed newstyle negotiation" and "Option reply types".
public sealed class HandshakeCodecTests
{
    private static readonly byte[] Greeting = [.. "NBDMAGICIHAVEOPT\0\u0003"u8];

    // ---------------------------------------------------------------- greeting

    [Fact]
    public void Server_greeting_is_NBDMAGIC_then_IHAVEOPT_then_16_bit_flags()
    {
        var buffer = new byte[NbdSizes.ServerGreeting];

        NbdHandshakeCodec.WriteServerGreeting(buffer, NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes);

        Assert.Equal(Greeting, buffer);
        Assert.Equal(Wire.Hex("4e42444d41474943 49484156454F5054 0003"), buffer);
    }

    [Fact]
    public void Server_greeting_decodes_its_flags_and_ignores_what_follows()
    {
        var source = Wire.Concat(Greeting, Wire.Hex("deadbeef"));

        Assert.True(NbdHandshakeCodec.TryReadServerGreeting(source, out var flags));
        Assert.Equal(NbdHandshakeFlags.FixedNewstyle | NbdHandshakeFlags.NoZeroes, flags);
    }

    [Fact]
    public void Server_greeting_keeps_unknown_handshake_flags_for_the_caller_to_ignore()
    {
        Assert.True(NbdHandshakeCodec.TryReadServerGreeting(Wire.Concat("NBDMAGICIHAVEOPT"u8.ToArray(), Wire.Hex("8001")), out var flags));
        Assert.Equal((NbdHandshakeFlags)0x8001, flags);
    }

    [Fact]
    public void Every_prefix_of_a_greeting_needs_more_bytes()
    {
        for (var length = 0; length < Greeting.Length; length++)
        {
            Assert.False(NbdHandshakeCodec.TryReadServerGreeting(Greeting.AsSpan(0, length), out var flags), $"prefix of {length} bytes");
            Assert.Equal(NbdHandshakeFlags.None, flags);
        }
    }

    [Fact]
    public void Greeting_with_a_wrong_first_magic_is_rejected_as_soon_as_8_bytes_arrive()
    {
        var source = "NBDMAGIXIHAVEOPT\0\u0001"u8.ToArray();

        var e = Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadServerGreeting(source.AsSpan(0, 8), out _));
        Assert.Contains("NBDMAGIC", e.Message, StringComparison.Ordinal);
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadServerGreeting(source, out _));
    }

    [Fact]
    public void Oldstyle_server_is_rejected_with_a_message_naming_oldstyle()
    {
        // NBDMAGIC, cliserv_magic, 64-bit size, 32-bit flags, 124 zero bytes.
        var oldstyle = Wire.Concat(Wire.Hex("4e42444d41474943 0000420281861253 0000000040000000 00000001"), new byte[124]);

        var e = Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadServerGreeting(oldstyle, out _));
        Assert.Contains("oldstyle", e.Message, StringComparison.Ordinal);
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadServerGreeting(oldstyle.AsSpan(0, 16), out _));
    }

    [Fact]
    public void Greeting_with_an_unknown_second_magic_is_rejected()
    {
        var e = Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadServerGreeting("NBDMAGICIHAVEOPX\0\u0001"u8, out _));
        Assert.Contains("IHAVEOPT", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0000")]
    [InlineData("0002")]
    [InlineData("fffe")]
    public void Server_without_fixed_newstyle_is_rejected(string flags)
    {
        var source = Wire.Concat("NBDMAGICIHAVEOPT"u8.ToArray(), Wire.Hex(flags));

        var e = Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadServerGreeting(source, out _));
        Assert.Contains("fixed newstyle", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Client_flags_are_32_bits_big_endian()
    {
        var buffer = new byte[4];

        NbdHandshakeCodec.WriteClientFlags(buffer, NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes);

        Assert.Equal(Wire.Hex("00000003"), buffer);
        Assert.False(NbdHandshakeCodec.TryReadClientFlags(buffer.AsSpan(0, 3), out _));
        Assert.True(NbdHandshakeCodec.TryReadClientFlags(buffer, out var flags));
        Assert.Equal(NbdClientFlags.FixedNewstyle | NbdClientFlags.NoZeroes, flags);
    }

    // ---------------------------------------------------------------- option header

    [Fact]
    public void Option_is_IHAVEOPT_option_length_then_payload()
    {
        var writer = new ArrayBufferWriter<byte>();

        NbdHandshakeCodec.WriteOption(writer, NbdOption.Go, [0xaa, 0xbb, 0xcc]);

        Assert.Equal(Wire.Hex("49484156454F5054 00000007 00000003 aabbcc"), writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void Option_without_payload_is_the_16_byte_header_alone()
    {
        var writer = new ArrayBufferWriter<byte>();

        NbdHandshakeCodec.WriteOption(writer, NbdOption.StructuredReply, []);

        Assert.Equal("IHAVEOPT\0\0\0\u0008\0\0\0\0"u8.ToArray(), writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void Option_header_decodes_and_every_prefix_needs_more()
    {
        var source = Wire.Hex("49484156454F5054 0000000a 00000123 ffff");
        for (var length = 0; length < NbdSizes.OptionHeader; length++)
        {
            Assert.False(NbdHandshakeCodec.TryReadOptionHeader(source.AsSpan(0, length), out _), $"prefix of {length} bytes");
        }

        Assert.True(NbdHandshakeCodec.TryReadOptionHeader(source, out var header));
        Assert.Equal(new NbdOptionHeader(NbdOption.SetMetaContext, 0x123), header);
    }

    [Fact]
    public void Option_header_with_a_wrong_magic_is_rejected()
    {
        var e = Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadOptionHeader(Wire.Hex("4e42444d41474943 00000007 00000000"), out _));
        Assert.Contains("IHAVEOPT", e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- option reply header

    [Fact]
    public void Option_reply_is_magic_option_type_length_then_payload()
    {
        var writer = new ArrayBufferWriter<byte>();

        NbdHandshakeCodec.WriteOptionReply(writer, NbdOption.Go, NbdOptionReplyType.Info, [0x00, 0x00]);

        Assert.Equal(Wire.Hex("0003e889045565a9 00000007 00000003 00000002 0000"), writer.WrittenSpan.ToArray());
    }

    [Fact]
    public void Option_reply_header_decodes_and_every_prefix_needs_more()
    {
        var source = Wire.Hex("0003e889045565a9 00000009 00000004 00000013");
        for (var length = 0; length < NbdSizes.OptionReplyHeader; length++)
        {
            Assert.False(NbdHandshakeCodec.TryReadOptionReplyHeader(source.AsSpan(0, length), out _), $"prefix of {length} bytes");
        }

        Assert.True(NbdHandshakeCodec.TryReadOptionReplyHeader(source, out var header));
        Assert.Equal(new NbdOptionReplyHeader(NbdOption.ListMetaContext, NbdOptionReplyType.MetaContext, 0x13), header);
        Assert.False(header.IsError);
    }

    [Theory]
    [InlineData("80000001", NbdOptionReplyType.ErrUnsupported)]
    [InlineData("80000006", NbdOptionReplyType.ErrUnknown)]
    [InlineData("8000abcd", (NbdOptionReplyType)0x8000abcd)]
    public void Option_reply_types_with_bit_31_are_errors(string type, NbdOptionReplyType expected)
    {
        Assert.True(NbdHandshakeCodec.TryReadOptionReplyHeader(Wire.Hex($"0003e889045565a9 00000007 {type} 00000000"), out var header));

        Assert.Equal(expected, header.ReplyType);
        Assert.True(header.IsError);
    }

    [Theory]
    [InlineData("49484156454F5054")] // IHAVEOPT echoed back
    [InlineData("0003e889045565a8")]
    [InlineData("a965550489e80300")] // little-endian reply magic
    public void Option_reply_with_a_wrong_magic_is_rejected(string magic)
    {
        var source = Wire.Hex($"{magic} 00000007 00000001 00000000");

        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadOptionReplyHeader(source, out _));
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.TryReadOptionReplyHeader(source.AsSpan(0, 8), out _));
    }

    // ---------------------------------------------------------------- NBD_OPT_INFO / NBD_OPT_GO payload

    [Fact]
    public void Export_info_request_is_name_length_name_count_and_types()
    {
        var payload = NbdHandshakeCodec.BuildExportInfoRequest("disk", [NbdInfoType.BlockSize, NbdInfoType.Name]);

        Assert.Equal(Wire.Concat(Wire.Hex("00000004"), "disk"u8.ToArray(), Wire.Hex("0002 0003 0001")), payload);
    }

    [Fact]
    public void Export_info_request_round_trips_including_the_default_export()
    {
        var name = NbdHandshakeCodec.ParseExportInfoRequest(NbdHandshakeCodec.BuildExportInfoRequest("vda", [NbdInfoType.Export, NbdInfoType.BlockSize]), out var requests);
        Assert.Equal("vda", name);
        Assert.Equal([NbdInfoType.Export, NbdInfoType.BlockSize], requests);

        Assert.Equal(Wire.Hex("00000000 0000"), NbdHandshakeCodec.BuildExportInfoRequest(string.Empty, []));
        Assert.Equal(string.Empty, NbdHandshakeCodec.ParseExportInfoRequest(Wire.Hex("00000000 0000"), out requests));
        Assert.Empty(requests);
    }

    [Theory]
    [InlineData("00000000 00")] // shorter than 6 bytes
    [InlineData("00000005 6469736b 0000")] // name length 5 but only 4 bytes of name
    [InlineData("ffffffff 0000")] // name length far over the payload
    [InlineData("00000000 0002 0003")] // two types announced, one present
    [InlineData("00000000 0001 0003 0001")] // one type announced, two present
    [InlineData("00000002 ff fe 0000")] // name is not UTF-8
    [InlineData("00000002 61 00 0000")] // name contains NUL
    public void Malformed_export_info_requests_are_rejected(string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseExportInfoRequest(Wire.Hex(payload), out _));
    }

    // ---------------------------------------------------------------- NBD_OPT_{LIST,SET}_META_CONTEXT payload

    [Fact]
    public void Meta_context_request_is_name_then_counted_length_prefixed_queries()
    {
        var payload = NbdHandshakeCodec.BuildMetaContextRequest("d", ["base:allocation", "qemu:dirty-bitmap:b"]);

        var expected = Wire.Concat(
            Wire.Hex("00000001"), "d"u8.ToArray(),
            Wire.Hex("00000002"),
            Wire.Hex("0000000f"), "base:allocation"u8.ToArray(),
            Wire.Hex("00000013"), "qemu:dirty-bitmap:b"u8.ToArray());
        Assert.Equal(expected, payload);

        Assert.Equal("d", NbdHandshakeCodec.ParseMetaContextRequest(payload, out var queries));
        Assert.Equal(["base:allocation", "qemu:dirty-bitmap:b"], queries);
    }

    [Theory]
    [InlineData("000000")] // no export name length
    [InlineData("00000000")] // no query count
    [InlineData("00000000 00000001")] // one query announced, none present
    [InlineData("00000000 ffffffff 00000000")] // absurd count, checked before allocating
    [InlineData("00000000 00000001 00000006 626173653a")] // query length runs past the payload
    [InlineData("00000000 00000000 00")] // trailing byte
    [InlineData("00000000 00000001 00000002 c328")] // query is not UTF-8
    public void Malformed_meta_context_requests_are_rejected(string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseMetaContextRequest(Wire.Hex(payload), out _));
    }

    // ---------------------------------------------------------------- NBD_REP_INFO

    [Fact]
    public void Info_export_is_12_bytes_type_size_flags()
    {
        var payload = NbdHandshakeCodec.BuildExportInfo(0x0000_0001_0000_0000, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.CanMultiConn);

        Assert.Equal(Wire.Hex("0000 0000000100000000 0105"), payload);

        var info = NbdHandshakeCodec.ParseInfo(payload);
        Assert.Equal(NbdInfoType.Export, info.Type);
        Assert.Equal(0x0000_0001_0000_0000UL, info.ExportSize);
        Assert.Equal(NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.SendFlush | NbdTransmissionFlags.CanMultiConn, info.Flags);
    }

    [Fact]
    public void Info_block_size_is_14_bytes_type_minimum_preferred_maximum()
    {
        var payload = NbdHandshakeCodec.BuildBlockSizeInfo(new NbdBlockSizes(512, 4096, 32 * 1024 * 1024));

        Assert.Equal(Wire.Hex("0003 00000200 00001000 02000000"), payload);

        var info = NbdHandshakeCodec.ParseInfo(payload);
        Assert.Equal(NbdInfoType.BlockSize, info.Type);
        Assert.Equal(new NbdBlockSizes(512, 4096, 32 * 1024 * 1024), info.BlockSizes);
    }

    [Fact]
    public void Info_name_and_description_are_type_then_the_string()
    {
        var name = NbdHandshakeCodec.BuildTextInfo(NbdInfoType.Name, "disk");
        var description = NbdHandshakeCodec.BuildTextInfo(NbdInfoType.Description, "système");

        Assert.Equal(Wire.Concat(Wire.Hex("0001"), "disk"u8.ToArray()), name);
        Assert.Equal(Wire.Concat(Wire.Hex("0002"), "système"u8.ToArray()), description);
        Assert.Equal(new NbdInfoReply(NbdInfoType.Name, 0, NbdTransmissionFlags.None, "disk", default), NbdHandshakeCodec.ParseInfo(name));
        Assert.Equal("système", NbdHandshakeCodec.ParseInfo(description).Text);
        Assert.Equal(string.Empty, NbdHandshakeCodec.ParseInfo(Wire.Hex("0001")).Text);
    }

    [Fact]
    public void Unknown_info_types_are_returned_for_the_caller_to_ignore()
    {
        var info = NbdHandshakeCodec.ParseInfo(Wire.Hex("0004 0102030405"));

        Assert.Equal((NbdInfoType)4, info.Type);
        Assert.Null(info.Text);
        Assert.Equal(0UL, info.ExportSize);
    }

    [Theory]
    [InlineData("")] // no type
    [InlineData("00")] // half a type
    [InlineData("0000 0000000100000000 01")] // NBD_INFO_EXPORT of 11 bytes
    [InlineData("0000 0000000100000000 0105 00")] // NBD_INFO_EXPORT of 13 bytes
    [InlineData("0000")] // NBD_INFO_EXPORT with no body
    [InlineData("0003 00000200 00001000 020000")] // NBD_INFO_BLOCK_SIZE of 13 bytes
    [InlineData("0003 00000200 00001000 02000000 00")] // NBD_INFO_BLOCK_SIZE of 15 bytes
    [InlineData("0001 6469 ff 6b")] // NBD_INFO_NAME not UTF-8
    [InlineData("0001 6469 00 6b")] // NBD_INFO_NAME with NUL
    [InlineData("0002 eda080")] // NBD_INFO_DESCRIPTION with an encoded surrogate
    public void Info_whose_length_or_content_contradicts_its_type_is_rejected(string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseInfo(Wire.Hex(payload)));
    }

    [Fact]
    public void Info_name_over_4096_bytes_is_rejected()
    {
        var payload = Wire.Concat(Wire.Hex("0001"), Enumerable.Repeat((byte)'a', 4097).ToArray());

        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseInfo(payload));
        Assert.Equal(4096, NbdHandshakeCodec.ParseInfo(payload.AsSpan(0, 2 + 4096)).Text!.Length);
    }

    // ---------------------------------------------------------------- block size constraints

    [Theory]
    [InlineData(1u, 4096u, 0xffff_ffffu)]
    [InlineData(512u, 4096u, 32u * 1024 * 1024)]
    [InlineData(65536u, 65536u, 3u * 65536)] // maximum need not be a power of two
    [InlineData(4096u, 4096u, 4096u)]
    [InlineData(4096u, 1u << 31, 0xffff_ffffu)] // 0xffffffff is "no limit", not a multiple
    public void Consistent_block_sizes_validate(uint minimum, uint preferred, uint maximum)
    {
        var sizes = NbdHandshakeCodec.ParseInfo(NbdHandshakeCodec.BuildBlockSizeInfo(new NbdBlockSizes(minimum, preferred, maximum))).BlockSizes;

        sizes.Validate();
        Assert.Equal(new NbdBlockSizes(minimum, preferred, maximum), sizes);
    }

    [Theory]
    [InlineData(0u, 4096u, 0xffff_ffffu, "minimum")] // zero
    [InlineData(3u, 4096u, 0xffff_ffffu, "minimum")] // not a power of two
    [InlineData(1536u, 4096u, 0xffff_ffffu, "minimum")]
    [InlineData(131072u, 131072u, 0xffff_ffffu, "minimum")] // over 64 KiB
    [InlineData(0x8000_0000u, 0x8000_0000u, 0xffff_ffffu, "minimum")]
    [InlineData(512u, 0u, 0xffff_ffffu, "preferred")]
    [InlineData(512u, 3000u, 0xffff_ffffu, "preferred")] // not a power of two
    [InlineData(4096u, 512u, 0xffff_ffffu, "preferred")] // below the minimum
    [InlineData(512u, 4096u, 1000u, "maximum")] // not a multiple of the minimum
    [InlineData(4096u, 4096u, 0u, "maximum")] // below the minimum
    [InlineData(4096u, 4096u, 2048u, "maximum")]
    [InlineData(512u, 4096u, 0xffff_fffeu, "maximum")]
    public void Inconsistent_block_sizes_are_rejected_naming_the_bad_field(uint minimum, uint preferred, uint maximum, string field)
    {
        var sizes = NbdHandshakeCodec.ParseInfo(NbdHandshakeCodec.BuildBlockSizeInfo(new NbdBlockSizes(minimum, preferred, maximum))).BlockSizes;

        var e = Assert.Throws<NbdProtocolException>(sizes.Validate);
        Assert.Contains(field, e.Message, StringComparison.Ordinal);
    }

    // ---------------------------------------------------------------- NBD_REP_META_CONTEXT

    [Fact]
    public void Meta_context_reply_is_id_then_name()
    {
        var payload = NbdHandshakeCodec.BuildMetaContext(7, "base:allocation");

        Assert.Equal(Wire.Concat(Wire.Hex("00000007"), "base:allocation"u8.ToArray()), payload);
        Assert.Equal(7u, NbdHandshakeCodec.ParseMetaContext(payload, out var name));
        Assert.Equal("base:allocation", name);
    }

    [Theory]
    [InlineData("")]
    [InlineData("000000")] // not even an id
    [InlineData("00000001")] // id without a name
    [InlineData("00000001 626173653a ff")] // not UTF-8
    [InlineData("00000001 626173653a c3")] // truncated UTF-8 sequence
    [InlineData("00000001 626173653a 00 61")] // NUL inside the name
    public void Malformed_meta_context_replies_are_rejected(string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseMetaContext(Wire.Hex(payload), out _));
    }

    [Fact]
    public void Meta_context_name_over_4096_bytes_is_rejected()
    {
        var payload = Wire.Concat(Wire.Hex("00000001"), "x:"u8.ToArray(), Enumerable.Repeat((byte)'a', 4095).ToArray());

        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseMetaContext(payload, out _));
        Assert.Equal(1u, NbdHandshakeCodec.ParseMetaContext(payload.AsSpan(0, payload.Length - 1), out var name));
        Assert.Equal(4096, name.Length);
    }

    // ---------------------------------------------------------------- NBD_REP_SERVER

    [Fact]
    public void Server_reply_is_name_length_name_then_description()
    {
        var payload = NbdHandshakeCodec.BuildServer("disk", "a disk");

        Assert.Equal(Wire.Concat(Wire.Hex("00000004"), "diska disk"u8.ToArray()), payload);
        Assert.Equal("disk", NbdHandshakeCodec.ParseServer(payload, out var description));
        Assert.Equal("a disk", description);
        Assert.Equal("disk", NbdHandshakeCodec.ParseServer(NbdHandshakeCodec.BuildServer("disk", null), out description));
        Assert.Equal(string.Empty, description);
    }

    [Theory]
    [InlineData("000000")]
    [InlineData("00000005 6469736b")]
    [InlineData("ffffffff")]
    [InlineData("00000001 ff")]
    public void Malformed_server_replies_are_rejected(string payload)
    {
        Assert.Throws<NbdProtocolException>(() => NbdHandshakeCodec.ParseServer(Wire.Hex(payload), out _));
    }

    // ---------------------------------------------------------------- NBD_OPT_EXPORT_NAME answer

    [Fact]
    public void Export_name_reply_is_size_flags_and_124_zeroes_unless_no_zeroes()
    {
        var padded = NbdHandshakeCodec.BuildExportNameReply(0x4000_0000, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly, noZeroes: false);
        var bare = NbdHandshakeCodec.BuildExportNameReply(0x4000_0000, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly, noZeroes: true);

        Assert.Equal(Wire.Concat(Wire.Hex("0000000040000000 0003"), new byte[124]), padded);
        Assert.Equal(Wire.Hex("0000000040000000 0003"), bare);

        Assert.False(NbdHandshakeCodec.TryReadExportNameReply(padded.AsSpan(0, 133), noZeroes: false, out _, out _));
        Assert.True(NbdHandshakeCodec.TryReadExportNameReply(padded, noZeroes: false, out var size, out var flags));
        Assert.Equal((0x4000_0000UL, NbdTransmissionFlags.HasFlags | NbdTransmissionFlags.ReadOnly), (size, flags));

        Assert.False(NbdHandshakeCodec.TryReadExportNameReply(bare.AsSpan(0, 9), noZeroes: true, out _, out _));
        Assert.True(NbdHandshakeCodec.TryReadExportNameReply(bare, noZeroes: true, out size, out _));
        Assert.Equal(0x4000_0000UL, size);
    }

    // ---------------------------------------------------------------- strings we send

    [Fact]
    public void Strings_we_send_are_checked_before_they_reach_the_wire()
    {
        Assert.Throws<ArgumentException>(() => NbdHandshakeCodec.BuildExportInfoRequest("a\0b", []));
        Assert.Throws<ArgumentException>(() => NbdHandshakeCodec.BuildMetaContextRequest("d", [new string('q', 4097)]));
        Assert.Equal(4 + 4096 + 2, NbdHandshakeCodec.BuildExportInfoRequest(new string('n', 4096), []).Length);
    }
}
