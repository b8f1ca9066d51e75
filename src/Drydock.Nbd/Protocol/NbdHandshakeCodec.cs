using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;

namespace Drydock.Nbd.Protocol;

/// <summary>Header of an option sent by the client: IHAVEOPT, option, payload length.</summary>
/// <param name="Option">The option.</param>
/// <param name="Length">Payload length that follows the header.</param>
public readonly record struct NbdOptionHeader(NbdOption Option, uint Length);

/// <summary>Header of an option reply: magic, option, reply type, payload length.</summary>
/// <param name="Option">The option being answered.</param>
/// <param name="ReplyType">The reply type.</param>
/// <param name="Length">Payload length that follows the header.</param>
public readonly record struct NbdOptionReplyHeader(NbdOption Option, NbdOptionReplyType ReplyType, uint Length)
{
    /// <summary>Whether the reply type is an error (bit 31 set).</summary>
    public bool IsError => ((uint)ReplyType & 0x8000_0000u) != 0;
}

/// <summary>Block-size constraints of an export (NBD_INFO_BLOCK_SIZE).</summary>
/// <param name="Minimum">Minimum block size: offsets and lengths are multiples of it.</param>
/// <param name="Preferred">Preferred block size.</param>
/// <param name="Maximum">Maximum payload of a single request.</param>
public readonly record struct NbdBlockSizes(uint Minimum, uint Preferred, uint Maximum)
{
    /// <summary>The constraints that apply when the server states none.</summary>
    public static NbdBlockSizes Default { get; } = new(1, 4096, NbdSizes.DefaultMaxPayload);

    /// <summary>Checks the rules of the specification's "Block size constraints" section.</summary>
    /// <exception cref="NbdProtocolException">The constraints are inconsistent.</exception>
    public void Validate()
    {
        if (Minimum == 0 || !BitOperations.IsPow2(Minimum) || Minimum > NbdSizes.MaxMinimumBlockSize)
        {
            throw new NbdProtocolException($"server block sizes invalid: minimum {Minimum} must be a power of two between 1 and {NbdSizes.MaxMinimumBlockSize}");
        }

        if (Preferred == 0 || !BitOperations.IsPow2(Preferred) || Preferred < Minimum)
        {
            throw new NbdProtocolException($"server block sizes invalid: preferred {Preferred} must be a power of two no smaller than the minimum {Minimum}");
        }

        if (Maximum < Minimum || (Maximum != uint.MaxValue && Maximum % Minimum != 0))
        {
            throw new NbdProtocolException($"server block sizes invalid: maximum {Maximum} must be a multiple of the minimum {Minimum} (or 0xffffffff)");
        }
    }
}

/// <summary>One NBD_REP_INFO reply, decoded.</summary>
/// <param name="Type">The information type.</param>
/// <param name="ExportSize">For <see cref="NbdInfoType.Export"/>: the size in bytes.</param>
/// <param name="Flags">For <see cref="NbdInfoType.Export"/>: the transmission flags.</param>
/// <param name="Text">For <see cref="NbdInfoType.Name"/> and <see cref="NbdInfoType.Description"/>.</param>
/// <param name="BlockSizes">For <see cref="NbdInfoType.BlockSize"/>.</param>
public readonly record struct NbdInfoReply(NbdInfoType Type, ulong ExportSize, NbdTransmissionFlags Flags, string? Text, NbdBlockSizes BlockSizes);

/// <summary>
/// Sans-IO encoder and decoder for the fixed-newstyle handshake, for both sides of the connection.
/// Decoders return <see langword="false"/> when more bytes are needed and throw
/// <see cref="NbdProtocolException"/> for bytes that can never be valid.
/// </summary>
public static class NbdHandshakeCodec
{
    // ---------------------------------------------------------------- greeting

    /// <summary>Reads the server greeting (client side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="flags">The server's handshake flags.</param>
    /// <returns><see langword="false"/> when fewer than 18 bytes are available.</returns>
    /// <exception cref="NbdProtocolException">Wrong magic, oldstyle server, or no fixed newstyle.</exception>
    public static bool TryReadServerGreeting(ReadOnlySpan<byte> source, out NbdHandshakeFlags flags)
    {
        flags = NbdHandshakeFlags.None;
        if (source.Length >= 8 && BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.InitPassword)
        {
            throw new NbdProtocolException($"not an NBD server: greeting magic 0x{BinaryPrimitives.ReadUInt64BigEndian(source):x16} is not NBDMAGIC");
        }

        if (source.Length >= 16)
        {
            var second = BinaryPrimitives.ReadUInt64BigEndian(source[8..]);
            if (second == NbdMagic.OldStyle)
            {
                throw new NbdProtocolException("the server speaks the oldstyle handshake, which Drydock does not support");
            }

            if (second != NbdMagic.IHaveOpt)
            {
                throw new NbdProtocolException($"unknown handshake style: magic 0x{second:x16} is not IHAVEOPT");
            }
        }

        if (source.Length < NbdSizes.ServerGreeting)
        {
            return false;
        }

        flags = (NbdHandshakeFlags)BinaryPrimitives.ReadUInt16BigEndian(source[16..]);
        if ((flags & NbdHandshakeFlags.FixedNewstyle) == 0)
        {
            throw new NbdProtocolException("the server does not offer the fixed newstyle handshake");
        }

        return true;
    }

    /// <summary>Writes the server greeting (server side).</summary>
    /// <param name="destination">At least 18 bytes.</param>
    /// <param name="flags">The handshake flags to advertise.</param>
    public static void WriteServerGreeting(Span<byte> destination, NbdHandshakeFlags flags)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, NbdMagic.InitPassword);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(destination[16..], (ushort)flags);
    }

    /// <summary>Writes the client flags (client side).</summary>
    /// <param name="destination">At least 4 bytes.</param>
    /// <param name="flags">The client flags.</param>
    public static void WriteClientFlags(Span<byte> destination, NbdClientFlags flags)
        => BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)flags);

    /// <summary>Reads the client flags (server side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="flags">The client flags.</param>
    /// <returns><see langword="false"/> when fewer than 4 bytes are available.</returns>
    public static bool TryReadClientFlags(ReadOnlySpan<byte> source, out NbdClientFlags flags)
    {
        if (source.Length < NbdSizes.ClientFlags)
        {
            flags = NbdClientFlags.None;
            return false;
        }

        flags = (NbdClientFlags)BinaryPrimitives.ReadUInt32BigEndian(source);
        return true;
    }

    // ---------------------------------------------------------------- options (client -> server)

    /// <summary>Writes an option header followed by its payload.</summary>
    /// <param name="writer">Where the bytes go.</param>
    /// <param name="option">The option.</param>
    /// <param name="payload">The option payload.</param>
    public static void WriteOption(IBufferWriter<byte> writer, NbdOption option, ReadOnlySpan<byte> payload)
    {
        var span = writer.GetSpan(NbdSizes.OptionHeader + payload.Length);
        BinaryPrimitives.WriteUInt64BigEndian(span, NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt32BigEndian(span[8..], (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(span[12..], checked((uint)payload.Length));
        payload.CopyTo(span[NbdSizes.OptionHeader..]);
        writer.Advance(NbdSizes.OptionHeader + payload.Length);
    }

    /// <summary>Reads an option header (server side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="header">The header.</param>
    /// <returns><see langword="false"/> when fewer than 16 bytes are available.</returns>
    /// <exception cref="NbdProtocolException">The option magic is wrong.</exception>
    public static bool TryReadOptionHeader(ReadOnlySpan<byte> source, out NbdOptionHeader header)
    {
        header = default;
        if (source.Length >= 8 && BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.IHaveOpt)
        {
            throw new NbdProtocolException($"option magic 0x{BinaryPrimitives.ReadUInt64BigEndian(source):x16} is not IHAVEOPT");
        }

        if (source.Length < NbdSizes.OptionHeader)
        {
            return false;
        }

        header = new NbdOptionHeader(
            (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[12..]));
        return true;
    }

    /// <summary>Builds the payload of NBD_OPT_INFO / NBD_OPT_GO.</summary>
    /// <param name="exportName">The export name.</param>
    /// <param name="requests">The information types asked for.</param>
    /// <returns>The payload bytes.</returns>
    public static byte[] BuildExportInfoRequest(string exportName, ReadOnlySpan<NbdInfoType> requests)
    {
        var name = NbdStrings.Encode(exportName, "export name");
        var payload = new byte[4 + name.Length + 2 + (2 * requests.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)name.Length);
        name.CopyTo(payload.AsSpan(4));
        var at = 4 + name.Length;
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(at), checked((ushort)requests.Length));
        at += 2;
        foreach (var request in requests)
        {
            BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(at), (ushort)request);
            at += 2;
        }

        return payload;
    }

    /// <summary>Parses the payload of NBD_OPT_INFO / NBD_OPT_GO (server side).</summary>
    /// <param name="payload">The option payload.</param>
    /// <param name="requests">The information types asked for.</param>
    /// <returns>The export name.</returns>
    /// <exception cref="NbdProtocolException">The payload is malformed.</exception>
    public static string ParseExportInfoRequest(ReadOnlySpan<byte> payload, out NbdInfoType[] requests)
    {
        if (payload.Length < 6)
        {
            throw new NbdProtocolException($"export info request of {payload.Length} bytes is too short");
        }

        var nameLength = BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (nameLength > (uint)(payload.Length - 6))
        {
            throw new NbdProtocolException($"export name length {nameLength} exceeds the option payload");
        }

        var name = NbdStrings.Decode(payload.Slice(4, (int)nameLength), "export name");
        var rest = payload[(4 + (int)nameLength)..];
        var count = BinaryPrimitives.ReadUInt16BigEndian(rest);
        if (rest.Length != 2 + (2 * count))
        {
            throw new NbdProtocolException($"export info request lists {count} information types but carries {rest.Length - 2} bytes of them");
        }

        requests = new NbdInfoType[count];
        for (var i = 0; i < count; i++)
        {
            requests[i] = (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(rest[(2 + (2 * i))..]);
        }

        return name;
    }

    /// <summary>Builds the payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.</summary>
    /// <param name="exportName">The export name.</param>
    /// <param name="queries">The context queries (names, or prefixes for LIST).</param>
    /// <returns>The payload bytes.</returns>
    public static byte[] BuildMetaContextRequest(string exportName, IReadOnlyList<string> queries)
    {
        var name = NbdStrings.Encode(exportName, "export name");
        var encoded = new byte[queries.Count][];
        var total = 4 + name.Length + 4;
        for (var i = 0; i < queries.Count; i++)
        {
            encoded[i] = NbdStrings.Encode(queries[i], "meta context query");
            total = checked(total + 4 + encoded[i].Length);
        }

        var payload = new byte[total];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)name.Length);
        name.CopyTo(payload.AsSpan(4));
        var at = 4 + name.Length;
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(at), (uint)encoded.Length);
        at += 4;
        foreach (var query in encoded)
        {
            BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(at), (uint)query.Length);
            query.CopyTo(payload.AsSpan(at + 4));
            at += 4 + query.Length;
        }

        return payload;
    }

    /// <summary>Parses the payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT (server side).</summary>
    /// <param name="payload">The option payload.</param>
    /// <param name="queries">The queries.</param>
    /// <returns>The export name.</returns>
    /// <exception cref="NbdProtocolException">The payload is malformed.</exception>
    public static string ParseMetaContextRequest(ReadOnlySpan<byte> payload, out string[] queries)
    {
        var reader = new SpanReader(payload, "meta context request");
        var name = NbdStrings.Decode(reader.ReadSized32(), "export name");
        var count = reader.ReadUInt32();
        if (count > (uint)reader.Remaining / 4)
        {
            throw new NbdProtocolException($"meta context request claims {count} queries in {reader.Remaining} bytes");
        }

        queries = new string[count];
        for (var i = 0; i < queries.Length; i++)
        {
            queries[i] = NbdStrings.Decode(reader.ReadSized32(), "meta context query");
        }

        reader.EnsureEnd();
        return name;
    }

    // ---------------------------------------------------------------- option replies (server -> client)

    /// <summary>Writes an option reply header followed by its payload (server side).</summary>
    /// <param name="writer">Where the bytes go.</param>
    /// <param name="option">The option being answered.</param>
    /// <param name="replyType">The reply type.</param>
    /// <param name="payload">The payload.</param>
    public static void WriteOptionReply(IBufferWriter<byte> writer, NbdOption option, NbdOptionReplyType replyType, ReadOnlySpan<byte> payload)
    {
        var span = writer.GetSpan(NbdSizes.OptionReplyHeader + payload.Length);
        BinaryPrimitives.WriteUInt64BigEndian(span, NbdMagic.OptionReply);
        BinaryPrimitives.WriteUInt32BigEndian(span[8..], (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(span[12..], (uint)replyType);
        BinaryPrimitives.WriteUInt32BigEndian(span[16..], checked((uint)payload.Length));
        payload.CopyTo(span[NbdSizes.OptionReplyHeader..]);
        writer.Advance(NbdSizes.OptionReplyHeader + payload.Length);
    }

    /// <summary>Reads an option reply header (client side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="header">The header.</param>
    /// <returns><see langword="false"/> when fewer than 20 bytes are available.</returns>
    /// <exception cref="NbdProtocolException">The reply magic is wrong.</exception>
    public static bool TryReadOptionReplyHeader(ReadOnlySpan<byte> source, out NbdOptionReplyHeader header)
    {
        header = default;
        if (source.Length >= 8 && BinaryPrimitives.ReadUInt64BigEndian(source) != NbdMagic.OptionReply)
        {
            throw new NbdProtocolException($"option reply magic 0x{BinaryPrimitives.ReadUInt64BigEndian(source):x16} is wrong");
        }

        if (source.Length < NbdSizes.OptionReplyHeader)
        {
            return false;
        }

        header = new NbdOptionReplyHeader(
            (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(source[8..]),
            (NbdOptionReplyType)BinaryPrimitives.ReadUInt32BigEndian(source[12..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[16..]));
        return true;
    }

    /// <summary>Builds an NBD_REP_INFO payload of type NBD_INFO_EXPORT.</summary>
    /// <param name="size">Export size in bytes.</param>
    /// <param name="flags">Transmission flags.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildExportInfo(ulong size, NbdTransmissionFlags flags)
    {
        var payload = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)NbdInfoType.Export);
        BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(2), size);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(10), (ushort)flags);
        return payload;
    }

    /// <summary>Builds an NBD_REP_INFO payload of type NBD_INFO_BLOCK_SIZE.</summary>
    /// <param name="sizes">The block sizes.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildBlockSizeInfo(NbdBlockSizes sizes)
    {
        var payload = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)NbdInfoType.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(2), sizes.Minimum);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(6), sizes.Preferred);
        BinaryPrimitives.WriteUInt32BigEndian(payload.AsSpan(10), sizes.Maximum);
        return payload;
    }

    /// <summary>Builds an NBD_REP_INFO payload carrying text (NBD_INFO_NAME or NBD_INFO_DESCRIPTION).</summary>
    /// <param name="type">Name or description.</param>
    /// <param name="text">The text.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildTextInfo(NbdInfoType type, string text)
    {
        var bytes = NbdStrings.Encode(text, "info text");
        var payload = new byte[2 + bytes.Length];
        BinaryPrimitives.WriteUInt16BigEndian(payload, (ushort)type);
        bytes.CopyTo(payload.AsSpan(2));
        return payload;
    }

    /// <summary>Parses an NBD_REP_INFO payload (client side).</summary>
    /// <param name="payload">The reply payload.</param>
    /// <returns>The decoded information; unknown types come back with only <see cref="NbdInfoReply.Type"/> set.</returns>
    /// <exception cref="NbdProtocolException">The length contradicts the information type.</exception>
    public static NbdInfoReply ParseInfo(ReadOnlySpan<byte> payload)
    {
        if (payload.Length < 2)
        {
            throw new NbdProtocolException($"NBD_REP_INFO of {payload.Length} bytes has no information type");
        }

        var type = (NbdInfoType)BinaryPrimitives.ReadUInt16BigEndian(payload);
        switch (type)
        {
            case NbdInfoType.Export:
                if (payload.Length != 12)
                {
                    throw new NbdProtocolException($"NBD_INFO_EXPORT must be 12 bytes, not {payload.Length}");
                }

                return new NbdInfoReply(type, BinaryPrimitives.ReadUInt64BigEndian(payload[2..]), (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(payload[10..]), null, default);
            case NbdInfoType.Name:
            case NbdInfoType.Description:
                return new NbdInfoReply(type, 0, NbdTransmissionFlags.None, NbdStrings.Decode(payload[2..], type == NbdInfoType.Name ? "export name" : "export description"), default);
            case NbdInfoType.BlockSize:
                if (payload.Length != 14)
                {
                    throw new NbdProtocolException($"NBD_INFO_BLOCK_SIZE must be 14 bytes, not {payload.Length}");
                }

                var sizes = new NbdBlockSizes(
                    BinaryPrimitives.ReadUInt32BigEndian(payload[2..]),
                    BinaryPrimitives.ReadUInt32BigEndian(payload[6..]),
                    BinaryPrimitives.ReadUInt32BigEndian(payload[10..]));
                return new NbdInfoReply(type, 0, NbdTransmissionFlags.None, null, sizes);
            default:
                return new NbdInfoReply(type, 0, NbdTransmissionFlags.None, null, default);
        }
    }

    /// <summary>Builds an NBD_REP_META_CONTEXT payload.</summary>
    /// <param name="contextId">The context id.</param>
    /// <param name="name">The context name.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildMetaContext(uint contextId, string name)
    {
        var bytes = NbdStrings.Encode(name, "meta context name");
        var payload = new byte[4 + bytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
        bytes.CopyTo(payload.AsSpan(4));
        return payload;
    }

    /// <summary>Parses an NBD_REP_META_CONTEXT payload.</summary>
    /// <param name="payload">The reply payload.</param>
    /// <param name="name">The context name.</param>
    /// <returns>The context id.</returns>
    /// <exception cref="NbdProtocolException">The payload is malformed.</exception>
    public static uint ParseMetaContext(ReadOnlySpan<byte> payload, out string name)
    {
        if (payload.Length < 5)
        {
            throw new NbdProtocolException($"NBD_REP_META_CONTEXT of {payload.Length} bytes is too short");
        }

        name = NbdStrings.Decode(payload[4..], "meta context name");
        return BinaryPrimitives.ReadUInt32BigEndian(payload);
    }

    /// <summary>Builds an NBD_REP_SERVER payload.</summary>
    /// <param name="name">Export name.</param>
    /// <param name="description">Optional description.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildServer(string name, string? description)
    {
        var nameBytes = NbdStrings.Encode(name, "export name");
        var descriptionBytes = description is null ? [] : NbdStrings.Encode(description, "export description");
        var payload = new byte[4 + nameBytes.Length + descriptionBytes.Length];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)nameBytes.Length);
        nameBytes.CopyTo(payload.AsSpan(4));
        descriptionBytes.CopyTo(payload.AsSpan(4 + nameBytes.Length));
        return payload;
    }

    /// <summary>Parses an NBD_REP_SERVER payload.</summary>
    /// <param name="payload">The reply payload.</param>
    /// <param name="description">The description (empty when absent).</param>
    /// <returns>The export name.</returns>
    /// <exception cref="NbdProtocolException">The payload is malformed.</exception>
    public static string ParseServer(ReadOnlySpan<byte> payload, out string description)
    {
        var reader = new SpanReader(payload, "NBD_REP_SERVER");
        var name = NbdStrings.Decode(reader.ReadSized32(), "export name");
        description = NbdStrings.DecodeMessage(reader.ReadRest());
        return name;
    }

    /// <summary>Builds the legacy NBD_OPT_EXPORT_NAME answer: size, flags and optional padding.</summary>
    /// <param name="size">Export size.</param>
    /// <param name="flags">Transmission flags.</param>
    /// <param name="noZeroes">Whether NO_ZEROES was negotiated (no padding).</param>
    /// <returns>The bytes.</returns>
    public static byte[] BuildExportNameReply(ulong size, NbdTransmissionFlags flags, bool noZeroes)
    {
        var reply = new byte[10 + (noZeroes ? 0 : NbdSizes.ExportNamePadding)];
        BinaryPrimitives.WriteUInt64BigEndian(reply, size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), (ushort)flags);
        return reply;
    }

    /// <summary>Reads the legacy NBD_OPT_EXPORT_NAME answer (client side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="noZeroes">Whether NO_ZEROES was negotiated.</param>
    /// <param name="size">Export size.</param>
    /// <param name="flags">Transmission flags.</param>
    /// <returns><see langword="false"/> when more bytes are needed.</returns>
    public static bool TryReadExportNameReply(ReadOnlySpan<byte> source, bool noZeroes, out ulong size, out NbdTransmissionFlags flags)
    {
        var needed = 10 + (noZeroes ? 0 : NbdSizes.ExportNamePadding);
        if (source.Length < needed)
        {
            size = 0;
            flags = NbdTransmissionFlags.None;
            return false;
        }

        size = BinaryPrimitives.ReadUInt64BigEndian(source);
        flags = (NbdTransmissionFlags)BinaryPrimitives.ReadUInt16BigEndian(source[8..]);
        return true;
    }

    /// <summary>Bounds-checked big-endian reader over a payload; any overrun is a protocol error.</summary>
    private ref struct SpanReader
    {
        private readonly ReadOnlySpan<byte> _source;
        private readonly string _what;
        private int _position;

        public SpanReader(ReadOnlySpan<byte> source, string what)
        {
            _source = source;
            _what = what;
            _position = 0;
        }

        public readonly int Remaining => _source.Length - _position;

        public uint ReadUInt32()
        {
            if (Remaining < 4)
            {
                throw new NbdProtocolException($"{_what} is truncated at byte {_position}");
            }

            var value = BinaryPrimitives.ReadUInt32BigEndian(_source[_position..]);
            _position += 4;
            return value;
        }

        public ReadOnlySpan<byte> ReadSized32()
        {
            var length = ReadUInt32();
            if (length > (uint)Remaining)
            {
                throw new NbdProtocolException($"{_what}: length {length} at byte {_position - 4} exceeds the {Remaining} bytes that remain");
            }

            var slice = _source.Slice(_position, (int)length);
            _position += (int)length;
            return slice;
        }

        public ReadOnlySpan<byte> ReadRest()
        {
            var rest = _source[_position..];
            _position = _source.Length;
            return rest;
        }

        public readonly void EnsureEnd()
        {
            if (Remaining != 0)
            {
                throw new NbdProtocolException($"{_what} has {Remaining} unexpected trailing bytes");
            }
        }
    }
}
