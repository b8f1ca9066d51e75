using System.Buffers.Binary;

namespace Drydock.Nbd.Protocol;

/// <summary>A transmission request header.</summary>
/// <param name="Flags">Command flags.</param>
/// <param name="Command">The command.</param>
/// <param name="Cookie">Opaque value the reply echoes.</param>
/// <param name="Offset">Byte offset in the export.</param>
/// <param name="Length">Length in bytes (for WRITE, the payload that follows).</param>
public readonly record struct NbdRequestHeader(NbdCommandFlags Flags, NbdCommand Command, ulong Cookie, ulong Offset, uint Length);

/// <summary>The kind of reply header received.</summary>
public enum NbdReplyKind
{
    /// <summary>A simple reply (16-byte header, data follows only for a successful READ).</summary>
    Simple = 1,

    /// <summary>A structured reply chunk (20-byte header, payload of the stated length).</summary>
    Structured = 2,
}

/// <summary>A reply header of either kind.</summary>
/// <param name="Kind">Simple or structured.</param>
/// <param name="Cookie">The cookie of the request being answered.</param>
/// <param name="Error">For simple replies: the error code (0 = success).</param>
/// <param name="Flags">For structured replies: the chunk flags.</param>
/// <param name="ChunkType">For structured replies: the chunk type.</param>
/// <param name="Length">For structured replies: the payload length.</param>
public readonly record struct NbdReplyHeader(NbdReplyKind Kind, ulong Cookie, NbdErrorCode Error, NbdReplyFlags Flags, NbdReplyChunkType ChunkType, uint Length)
{
    /// <summary>Whether this is the last chunk of the reply (always true for simple replies).</summary>
    public bool IsDone => Kind == NbdReplyKind.Simple || (Flags & NbdReplyFlags.Done) != 0;

    /// <summary>Whether a structured chunk type is in the error category (bit 15).</summary>
    public bool IsErrorChunk => Kind == NbdReplyKind.Structured && ((ushort)ChunkType & 0x8000) != 0;
}

/// <summary>An error chunk, decoded.</summary>
/// <param name="Error">The error code (never zero).</param>
/// <param name="Message">The server's message.</param>
/// <param name="Offset">For NBD_REPLY_TYPE_ERROR_OFFSET: the failing offset.</param>
public readonly record struct NbdErrorChunk(NbdErrorCode Error, string Message, ulong? Offset);

/// <summary>One block-status descriptor.</summary>
/// <param name="Length">Length of the extent in bytes (never zero).</param>
/// <param name="Flags">Status flags, defined by the context.</param>
public readonly record struct NbdBlockDescriptor(uint Length, uint Flags);

/// <summary>
/// Sans-IO encoder and decoder for the transmission phase (requests, simple replies, structured chunks).
/// </summary>
public static class NbdTransmissionCodec
{
    /// <summary>Writes a request header.</summary>
    /// <param name="destination">At least 28 bytes.</param>
    /// <param name="request">The request.</param>
    public static void WriteRequest(Span<byte> destination, in NbdRequestHeader request)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.Request);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)request.Flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)request.Command);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], request.Cookie);
        BinaryPrimitives.WriteUInt64BigEndian(destination[16..], request.Offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[24..], request.Length);
    }

    /// <summary>Reads a request header (server side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="request">The request.</param>
    /// <returns><see langword="false"/> when fewer than 28 bytes are available.</returns>
    /// <exception cref="NbdProtocolException">The request magic is wrong.</exception>
    public static bool TryReadRequest(ReadOnlySpan<byte> source, out NbdRequestHeader request)
    {
        request = default;
        if (source.Length >= 4 && BinaryPrimitives.ReadUInt32BigEndian(source) != NbdMagic.Request)
        {
            throw new NbdProtocolException($"request magic 0x{BinaryPrimitives.ReadUInt32BigEndian(source):x8} is wrong");
        }

        if (source.Length < NbdSizes.RequestHeader)
        {
            return false;
        }

        request = new NbdRequestHeader(
            (NbdCommandFlags)BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
            (NbdCommand)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
            BinaryPrimitives.ReadUInt64BigEndian(source[16..]),
            BinaryPrimitives.ReadUInt32BigEndian(source[24..]));
        return true;
    }

    /// <summary>Writes a simple reply header.</summary>
    /// <param name="destination">At least 16 bytes.</param>
    /// <param name="cookie">The request's cookie.</param>
    /// <param name="error">The error (0 for success).</param>
    public static void WriteSimpleReply(Span<byte> destination, ulong cookie, NbdErrorCode error)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.SimpleReply);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], (uint)error);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], cookie);
    }

    /// <summary>Writes a structured reply chunk header.</summary>
    /// <param name="destination">At least 20 bytes.</param>
    /// <param name="flags">Chunk flags.</param>
    /// <param name="type">Chunk type.</param>
    /// <param name="cookie">The request's cookie.</param>
    /// <param name="length">Payload length.</param>
    public static void WriteStructuredHeader(Span<byte> destination, NbdReplyFlags flags, NbdReplyChunkType type, ulong cookie, uint length)
    {
        BinaryPrimitives.WriteUInt32BigEndian(destination, NbdMagic.StructuredReply);
        BinaryPrimitives.WriteUInt16BigEndian(destination[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(destination[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(destination[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(destination[16..], length);
    }

    /// <summary>Reads a reply header of either kind (client side).</summary>
    /// <param name="source">Bytes received so far.</param>
    /// <param name="structuredNegotiated">Whether structured replies were negotiated; without it a structured chunk is a violation.</param>
    /// <param name="header">The header.</param>
    /// <param name="headerLength">16 or 20: the bytes the header occupies.</param>
    /// <returns><see langword="false"/> when more bytes are needed.</returns>
    /// <exception cref="NbdProtocolException">Unknown magic, or a structured reply that was not negotiated.</exception>
    public static bool TryReadReplyHeader(ReadOnlySpan<byte> source, bool structuredNegotiated, out NbdReplyHeader header, out int headerLength)
    {
        header = default;
        headerLength = 0;
        if (source.Length < 4)
        {
            return false;
        }

        var magic = BinaryPrimitives.ReadUInt32BigEndian(source);
        switch (magic)
        {
            case NbdMagic.SimpleReply:
                if (source.Length < NbdSizes.SimpleReplyHeader)
                {
                    return false;
                }

                header = new NbdReplyHeader(
                    NbdReplyKind.Simple,
                    BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
                    (NbdErrorCode)BinaryPrimitives.ReadUInt32BigEndian(source[4..]),
                    NbdReplyFlags.Done,
                    NbdReplyChunkType.None,
                    0);
                headerLength = NbdSizes.SimpleReplyHeader;
                return true;
            case NbdMagic.StructuredReply:
                if (!structuredNegotiated)
                {
                    throw new NbdProtocolException("server sent a structured reply although structured replies were not negotiated");
                }

                if (source.Length < NbdSizes.StructuredReplyHeader)
                {
                    return false;
                }

                header = new NbdReplyHeader(
                    NbdReplyKind.Structured,
                    BinaryPrimitives.ReadUInt64BigEndian(source[8..]),
                    NbdErrorCode.None,
                    (NbdReplyFlags)BinaryPrimitives.ReadUInt16BigEndian(source[4..]),
                    (NbdReplyChunkType)BinaryPrimitives.ReadUInt16BigEndian(source[6..]),
                    BinaryPrimitives.ReadUInt32BigEndian(source[16..]));
                headerLength = NbdSizes.StructuredReplyHeader;
                return true;
            case NbdMagic.ExtendedReply:
                throw new NbdProtocolException("server sent an extended-header reply although extended headers were not negotiated");
            default:
                throw new NbdProtocolException($"reply magic 0x{magic:x8} is wrong");
        }
    }

    /// <summary>Reads the 8-byte offset that starts an OFFSET_DATA payload.</summary>
    /// <param name="payloadStart">At least the first 8 bytes of the payload.</param>
    /// <param name="chunkLength">The chunk's stated length.</param>
    /// <returns>The offset of the data.</returns>
    /// <exception cref="NbdProtocolException">The chunk is shorter than 9 bytes.</exception>
    public static ulong ReadOffsetDataOffset(ReadOnlySpan<byte> payloadStart, uint chunkLength)
    {
        if (chunkLength < 9)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_OFFSET_DATA length {chunkLength} is below the minimum of 9");
        }

        return BinaryPrimitives.ReadUInt64BigEndian(payloadStart);
    }

    /// <summary>Writes the offset that starts an OFFSET_DATA payload.</summary>
    /// <param name="destination">At least 8 bytes.</param>
    /// <param name="offset">The data offset.</param>
    public static void WriteOffsetDataOffset(Span<byte> destination, ulong offset)
        => BinaryPrimitives.WriteUInt64BigEndian(destination, offset);

    /// <summary>Parses an OFFSET_HOLE payload.</summary>
    /// <param name="payload">Exactly 12 bytes.</param>
    /// <param name="holeLength">The hole size.</param>
    /// <returns>The hole offset.</returns>
    /// <exception cref="NbdProtocolException">Wrong length or a zero-sized hole.</exception>
    public static ulong ParseOffsetHole(ReadOnlySpan<byte> payload, out uint holeLength)
    {
        if (payload.Length != 12)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_OFFSET_HOLE length must be 12, not {payload.Length}");
        }

        holeLength = BinaryPrimitives.ReadUInt32BigEndian(payload[8..]);
        if (holeLength == 0)
        {
            throw new NbdProtocolException("NBD_REPLY_TYPE_OFFSET_HOLE with a hole size of zero");
        }

        return BinaryPrimitives.ReadUInt64BigEndian(payload);
    }

    /// <summary>Writes an OFFSET_HOLE payload.</summary>
    /// <param name="destination">At least 12 bytes.</param>
    /// <param name="offset">Hole offset.</param>
    /// <param name="length">Hole size.</param>
    public static void WriteOffsetHole(Span<byte> destination, ulong offset, uint length)
    {
        BinaryPrimitives.WriteUInt64BigEndian(destination, offset);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], length);
    }

    /// <summary>Parses the payload of an error chunk (any type with bit 15 set).</summary>
    /// <param name="payload">The payload.</param>
    /// <param name="type">The chunk type.</param>
    /// <returns>The error.</returns>
    /// <exception cref="NbdProtocolException">Error code 0, lengths that contradict each other, oversized message.</exception>
    public static NbdErrorChunk ParseErrorChunk(ReadOnlySpan<byte> payload, NbdReplyChunkType type)
    {
        if (payload.Length < 6)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(type)} length {payload.Length} is below the minimum of 6");
        }

        var error = (NbdErrorCode)BinaryPrimitives.ReadUInt32BigEndian(payload);
        if (error == NbdErrorCode.None)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(type)} carries error code 0");
        }

        var messageLength = BinaryPrimitives.ReadUInt16BigEndian(payload[4..]);
        if (messageLength > NbdSizes.MaxString)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(type)} message of {messageLength} bytes exceeds {NbdSizes.MaxString}");
        }

        if (messageLength > payload.Length - 6)
        {
            throw new NbdProtocolException($"{NbdNames.Chunk(type)} message length {messageLength} exceeds the chunk");
        }

        var message = NbdStrings.DecodeMessage(payload.Slice(6, messageLength));
        var rest = payload[(6 + messageLength)..];
        if (type == NbdReplyChunkType.ErrorOffset)
        {
            if (rest.Length != 8)
            {
                throw new NbdProtocolException($"NBD_REPLY_TYPE_ERROR_OFFSET has {rest.Length} bytes after its message instead of an 8-byte offset");
            }

            return new NbdErrorChunk(error, message, BinaryPrimitives.ReadUInt64BigEndian(rest));
        }

        if (type == NbdReplyChunkType.Error && rest.Length != 0)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_ERROR has {rest.Length} unexpected bytes after its message");
        }

        return new NbdErrorChunk(error, message, null);
    }

    /// <summary>Builds the payload of an error chunk.</summary>
    /// <param name="error">The error (non-zero).</param>
    /// <param name="message">A message for people.</param>
    /// <param name="offset">For NBD_REPLY_TYPE_ERROR_OFFSET: the offset.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildErrorChunk(NbdErrorCode error, string message, ulong? offset)
    {
        var text = NbdStrings.Encode(message, "error message");
        var payload = new byte[6 + text.Length + (offset.HasValue ? 8 : 0)];
        BinaryPrimitives.WriteUInt32BigEndian(payload, (uint)error);
        BinaryPrimitives.WriteUInt16BigEndian(payload.AsSpan(4), (ushort)text.Length);
        text.CopyTo(payload.AsSpan(6));
        if (offset is { } at)
        {
            BinaryPrimitives.WriteUInt64BigEndian(payload.AsSpan(6 + text.Length), at);
        }

        return payload;
    }

    /// <summary>Checks the length of a BLOCK_STATUS payload and reads its context id.</summary>
    /// <param name="payload">The whole payload.</param>
    /// <param name="descriptors">The descriptor bytes (a positive multiple of 8).</param>
    /// <returns>The context id.</returns>
    /// <exception cref="NbdProtocolException">The length is not 4 + a positive multiple of 8.</exception>
    public static uint ParseBlockStatus(ReadOnlySpan<byte> payload, out ReadOnlySpan<byte> descriptors)
    {
        if (payload.Length < 4 + NbdSizes.BlockDescriptor || (payload.Length - 4) % NbdSizes.BlockDescriptor != 0)
        {
            throw new NbdProtocolException($"NBD_REPLY_TYPE_BLOCK_STATUS length {payload.Length} is not 4 plus a positive multiple of 8");
        }

        descriptors = payload[4..];
        return BinaryPrimitives.ReadUInt32BigEndian(payload);
    }

    /// <summary>Reads descriptor <paramref name="index"/> from the descriptor bytes.</summary>
    /// <param name="descriptors">Descriptor bytes from <see cref="ParseBlockStatus"/>.</param>
    /// <param name="index">Zero-based index.</param>
    /// <returns>The descriptor.</returns>
    public static NbdBlockDescriptor ReadDescriptor(ReadOnlySpan<byte> descriptors, int index)
    {
        var at = descriptors[(index * NbdSizes.BlockDescriptor)..];
        return new NbdBlockDescriptor(BinaryPrimitives.ReadUInt32BigEndian(at), BinaryPrimitives.ReadUInt32BigEndian(at[4..]));
    }

    /// <summary>Builds a BLOCK_STATUS payload.</summary>
    /// <param name="contextId">The context id.</param>
    /// <param name="descriptors">The descriptors.</param>
    /// <returns>The payload.</returns>
    public static byte[] BuildBlockStatus(uint contextId, ReadOnlySpan<NbdBlockDescriptor> descriptors)
    {
        var payload = new byte[4 + (descriptors.Length * NbdSizes.BlockDescriptor)];
        BinaryPrimitives.WriteUInt32BigEndian(payload, contextId);
        for (var i = 0; i < descriptors.Length; i++)
        {
            var at = payload.AsSpan(4 + (i * NbdSizes.BlockDescriptor));
            BinaryPrimitives.WriteUInt32BigEndian(at, descriptors[i].Length);
            BinaryPrimitives.WriteUInt32BigEndian(at[4..], descriptors[i].Flags);
        }

        return payload;
    }
}
