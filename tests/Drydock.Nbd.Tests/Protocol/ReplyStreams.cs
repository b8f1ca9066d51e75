using System.Buffers;
using System.Buffers.Binary;
using Drydock.Nbd.Protocol;
using Xunit;

namespace Drydock.Nbd.Tests.Protocol;

/// <summary>The wire field a byte belongs to, so corruptions can be aimed and their effect predicted.</summary>
internal enum WireField
{
    Magic,
    Flags,
    ChunkType,
    Cookie,
    Length,
    Option,
    ReplyType,
    DataOffset,
    Data,
    HoleOffset,
    HoleSize,
    ErrorCode,
    MessageLength,
    Message,
    ErrorOffset,
    ContextId,
    DescriptorLength,
    DescriptorFlags,
    InfoType,
    InfoBody,
    MetaContextId,
    Text,
}

/// <summary>Where one field lies in an encoded stream.</summary>
internal readonly record struct FieldSpan(WireField Field, int Start, int Length);

/// <summary>Encodes a stream of structured reply chunks or option replies with the codec, recording its field layout.</summary>
internal sealed class WireStreamBuilder
{
    private readonly ArrayBufferWriter<byte> _writer = new();
    private readonly List<FieldSpan> _fields = [];

    public byte[] Bytes => _writer.WrittenSpan.ToArray();

    public IReadOnlyList<FieldSpan> Fields => _fields;

    public void Chunk(NbdReplyFlags flags, NbdReplyChunkType type, ulong cookie, ReadOnlySpan<byte> payload, params ReadOnlySpan<FieldSpan> payloadFields)
    {
        var at = _writer.WrittenCount;
        var span = _writer.GetSpan(NbdSizes.StructuredReplyHeader + payload.Length);
        NbdTransmissionCodec.WriteStructuredHeader(span, flags, type, cookie, (uint)payload.Length);
        payload.CopyTo(span[NbdSizes.StructuredReplyHeader..]);
        _writer.Advance(NbdSizes.StructuredReplyHeader + payload.Length);
        AddFields(at, [new(WireField.Magic, 0, 4), new(WireField.Flags, 4, 2), new(WireField.ChunkType, 6, 2), new(WireField.Cookie, 8, 8), new(WireField.Length, 16, 4)]);
        AddFields(at + NbdSizes.StructuredReplyHeader, payloadFields);
    }

    public void OptionReply(NbdOption option, NbdOptionReplyType type, ReadOnlySpan<byte> payload, params ReadOnlySpan<FieldSpan> payloadFields)
    {
        var at = _writer.WrittenCount;
        NbdHandshakeCodec.WriteOptionReply(_writer, option, type, payload);
        AddFields(at, [new(WireField.Magic, 0, 8), new(WireField.Option, 8, 4), new(WireField.ReplyType, 12, 4), new(WireField.Length, 16, 4)]);
        AddFields(at + NbdSizes.OptionReplyHeader, payloadFields);
    }

    private void AddFields(int origin, ReadOnlySpan<FieldSpan> fields)
    {
        foreach (var field in fields)
        {
            if (field.Length > 0)
            {
                _fields.Add(field with { Start = origin + field.Start });
            }
        }
    }
}

internal enum StreamOutcome
{
    /// <summary>The bytes end before the reply does: a reader would wait for more.</summary>
    NeedMore,

    /// <summary>The reply ended with its DONE chunk (or final option reply).</summary>
    Done,
}

/// <summary>One content chunk of a READ reply as decoded.</summary>
internal readonly record struct ContentPiece(NbdReplyChunkType Type, ulong Offset, ulong Length);

internal sealed record ReadReplyResult(StreamOutcome Outcome, int Consumed, byte[] Data, IReadOnlyList<ContentPiece> Pieces, IReadOnlyList<NbdErrorChunk> Errors);

internal sealed record BlockStatusResult(StreamOutcome Outcome, int Consumed, IReadOnlyDictionary<string, List<NbdExtent>> Extents, IReadOnlyList<NbdErrorChunk> Errors);

/// <summary>
/// Drives the sans-IO decoders over a byte array the way a connection's reader does — header, payload,
/// validation — for the reply to one request. Each loop turn consumes at least a whole header or returns,
/// so no input can make it spin. Every range the validators judge is also judged by a naive oracle
/// written here (a per-byte map, 128-bit sums); a disagreement fails the test with an xunit assertion,
/// which is never an <see cref="NbdProtocolException"/>.
/// </summary>
internal static class ReplyStreamReader
{
    /// <summary>Chunk length cap, checked before waiting for the payload (the connection's caps play this part).</summary>
    public const uint MaxChunk = 1 << 20;

    public static ReadReplyResult ReadRead(ReadOnlySpan<byte> stream, ulong cookie, ulong offset, uint length)
    {
        var coverage = new NbdReadCoverage(offset, length);
        var oracle = new ByteMap(offset, length);
        var data = new byte[length];
        var pieces = new List<ContentPiece>();
        var errors = new List<NbdErrorChunk>();
        var at = 0;
        while (true)
        {
            if (!TryReadChunk(stream, ref at, cookie, out var header, out var payload))
            {
                return new ReadReplyResult(StreamOutcome.NeedMore, at, data, pieces, errors);
            }

            if (header.Kind == NbdReplyKind.Simple)
            {
                throw new NbdProtocolException("simple reply to a READ although structured replies were negotiated");
            }

            switch (header.ChunkType)
            {
                case NbdReplyChunkType.None:
                    CheckNone(header);
                    break;
                case NbdReplyChunkType.OffsetData:
                    var dataOffset = NbdTransmissionCodec.ReadOffsetDataOffset(payload, header.Length);
                    var bytes = payload[8..];
                    AddRange(coverage, oracle, dataOffset, (ulong)bytes.Length, header.ChunkType);
                    bytes.CopyTo(data.AsSpan(checked((int)(dataOffset - offset))));
                    pieces.Add(new ContentPiece(header.ChunkType, dataOffset, (ulong)bytes.Length));
                    break;
                case NbdReplyChunkType.OffsetHole:
                    var holeOffset = NbdTransmissionCodec.ParseOffsetHole(payload, out var holeLength);
                    AddRange(coverage, oracle, holeOffset, holeLength, header.ChunkType);
                    data.AsSpan(checked((int)(holeOffset - offset)), checked((int)holeLength)).Clear();
                    pieces.Add(new ContentPiece(header.ChunkType, holeOffset, holeLength));
                    break;
                default:
                    var error = ReadErrorChunk(header, payload);
                    if (error.Offset is { } errorOffset)
                    {
                        var inside = oracle.Contains(errorOffset);
                        try
                        {
                            coverage.CheckErrorOffset(errorOffset);
                        }
                        catch (NbdProtocolException)
                        {
                            Assert.False(inside, $"error offset {errorOffset} is inside the request but was rejected");
                            throw;
                        }

                        Assert.True(inside, $"error offset {errorOffset} is outside the request but was accepted");
                    }

                    errors.Add(error);
                    break;
            }

            if (header.IsDone)
            {
                Assert.Equal(oracle.IsComplete, coverage.IsComplete);
                Assert.Equal(oracle.Covered, coverage.Covered);
                if (errors.Count == 0 && !coverage.IsComplete)
                {
                    Assert.Equal(oracle.FirstMissing, coverage.FirstMissing());
                    throw new NbdProtocolException($"reply ended with bytes missing from offset {coverage.FirstMissing()}");
                }

                return new ReadReplyResult(StreamOutcome.Done, at, data, pieces, errors);
            }
        }
    }

    public static BlockStatusResult ReadBlockStatus(ReadOnlySpan<byte> stream, ulong cookie, ulong offset, uint length, bool requestOne, ulong exportSize, IReadOnlyDictionary<uint, string> contexts)
    {
        var validator = new NbdBlockStatusValidator(offset, length, requestOne, exportSize, contexts);
        var seen = new HashSet<uint>();
        var extents = new Dictionary<string, List<NbdExtent>>(StringComparer.Ordinal);
        var errors = new List<NbdErrorChunk>();
        var at = 0;
        while (true)
        {
            if (!TryReadChunk(stream, ref at, cookie, out var header, out var payload))
            {
                return new BlockStatusResult(StreamOutcome.NeedMore, at, extents, errors);
            }

            if (header.Kind == NbdReplyKind.Simple)
            {
                if (header.Error == NbdErrorCode.None)
                {
                    throw new NbdProtocolException("simple success reply to BLOCK_STATUS");
                }

                errors.Add(new NbdErrorChunk(header.Error, string.Empty, null));
                return new BlockStatusResult(StreamOutcome.Done, at, extents, errors);
            }

            switch (header.ChunkType)
            {
                case NbdReplyChunkType.None:
                    CheckNone(header);
                    break;
                case NbdReplyChunkType.BlockStatus:
                    var wellFormed = payload.Length >= 12 && (payload.Length - 4) % 8 == 0;
                    uint contextId;
                    scoped ReadOnlySpan<byte> descriptors;
                    try
                    {
                        contextId = NbdTransmissionCodec.ParseBlockStatus(payload, out descriptors);
                    }
                    catch (NbdProtocolException)
                    {
                        Assert.False(wellFormed, $"BLOCK_STATUS payload of {payload.Length} bytes is well formed but was rejected");
                        throw;
                    }

                    Assert.True(wellFormed, $"BLOCK_STATUS payload of {payload.Length} bytes is malformed but was accepted");
                    var valid = OracleAcceptsBlockStatus(contextId, descriptors, offset, length, requestOne, exportSize, contexts, seen);
                    var list = new List<NbdExtent>();
                    string name;
                    try
                    {
                        name = validator.Accept(contextId, descriptors, list);
                    }
                    catch (NbdProtocolException)
                    {
                        Assert.False(valid, $"BLOCK_STATUS chunk for context {contextId} is valid but was rejected");
                        throw;
                    }

                    Assert.True(valid, $"BLOCK_STATUS chunk for context {contextId} is invalid but was accepted");
                    Assert.Equal(contexts[contextId], name);
                    extents[name] = list;
                    break;
                default:
                    errors.Add(ReadErrorChunk(header, payload));
                    break;
            }

            if (header.IsDone)
            {
                Assert.Equal(seen.Count == contexts.Count, validator.IsComplete);
                if (errors.Count == 0 && !validator.IsComplete)
                {
                    throw new NbdProtocolException("BLOCK_STATUS reply ended without extents for every context");
                }

                return new BlockStatusResult(StreamOutcome.Done, at, extents, errors);
            }
        }
    }

    /// <summary>Header, cookie, cap, then the whole payload; false when the bytes end first.</summary>
    private static bool TryReadChunk(ReadOnlySpan<byte> stream, ref int at, ulong cookie, out NbdReplyHeader header, out ReadOnlySpan<byte> payload)
    {
        payload = default;
        if (!NbdTransmissionCodec.TryReadReplyHeader(stream[at..], structuredNegotiated: true, out header, out var headerLength))
        {
            Assert.Equal(0, headerLength);
            return false;
        }

        Assert.True(headerLength is NbdSizes.SimpleReplyHeader or NbdSizes.StructuredReplyHeader);
        if (header.Cookie != cookie)
        {
            throw new NbdProtocolException($"cookie {header.Cookie} matches no request in flight");
        }

        if (header.Kind == NbdReplyKind.Simple)
        {
            at += headerLength;
            return true;
        }

        if (header.Length > MaxChunk)
        {
            throw new NbdProtocolException($"chunk of {header.Length} bytes is over the cap");
        }

        if ((uint)(stream.Length - at - headerLength) < header.Length)
        {
            return false;
        }

        payload = stream.Slice(at + headerLength, (int)header.Length);
        at += headerLength + (int)header.Length;
        return true;
    }

    private static void CheckNone(NbdReplyHeader header)
    {
        if (header.Length != 0 || !header.IsDone)
        {
            throw new NbdProtocolException("NBD_REPLY_TYPE_NONE must be empty and final");
        }
    }

    private static NbdErrorChunk ReadErrorChunk(NbdReplyHeader header, ReadOnlySpan<byte> payload)
    {
        if (!header.IsErrorChunk)
        {
            throw new NbdProtocolException($"unexpected chunk type {NbdNames.Chunk(header.ChunkType)}");
        }

        var type = header.ChunkType is NbdReplyChunkType.Error or NbdReplyChunkType.ErrorOffset ? header.ChunkType : (NbdReplyChunkType)0xffff;
        var error = NbdTransmissionCodec.ParseErrorChunk(payload, type);
        Assert.NotEqual(NbdErrorCode.None, error.Error);
        Assert.True(error.Message.Length <= NbdSizes.MaxString);
        Assert.DoesNotContain('\0', error.Message);
        Assert.Equal(type == NbdReplyChunkType.ErrorOffset, error.Offset.HasValue);
        return error;
    }

    private static void AddRange(NbdReadCoverage coverage, ByteMap oracle, ulong offset, ulong length, NbdReplyChunkType type)
    {
        var valid = oracle.TryAdd(offset, length);
        try
        {
            coverage.Add(offset, length, type);
        }
        catch (NbdProtocolException)
        {
            Assert.False(valid, $"[{offset}, +{length}) is new and inside the request but was rejected");
            throw;
        }

        Assert.True(valid, $"[{offset}, +{length}) is outside the request or overlaps but was accepted");
    }

    // The rules of "NBD_REPLY_TYPE_BLOCK_STATUS", restated as plainly as possible.
    private static bool OracleAcceptsBlockStatus(uint contextId, ReadOnlySpan<byte> descriptors, ulong offset, uint length, bool requestOne, ulong exportSize, IReadOnlyDictionary<uint, string> contexts, HashSet<uint> seen)
    {
        if (!contexts.ContainsKey(contextId) || !seen.Add(contextId))
        {
            return false;
        }

        var count = descriptors.Length / 8;
        if (requestOne && count != 1)
        {
            return false;
        }

        UInt128 sum = 0;
        for (var i = 0; i < count; i++)
        {
            var extent = BinaryPrimitives.ReadUInt32BigEndian(descriptors[(i * 8)..]);
            if (extent == 0 || (i > 0 && sum >= length))
            {
                return false;
            }

            sum += extent;
            if ((UInt128)offset + sum > exportSize || (requestOne && extent > length))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The oracle for READ coverage: one flag per requested byte.</summary>
    private sealed class ByteMap(ulong start, uint length)
    {
        private readonly bool[] _covered = new bool[length];

        public ulong Covered { get; private set; }

        public bool IsComplete => Covered == length;

        public ulong FirstMissing
        {
            get
            {
                var index = Array.IndexOf(_covered, false);
                return index < 0 ? start + length : start + (ulong)index;
            }
        }

        public bool Contains(ulong offset) => offset >= start && offset - start < length;

        public bool TryAdd(ulong offset, ulong count)
        {
            if (count == 0 || offset < start || (UInt128)offset + count > (UInt128)start + length)
            {
                return false;
            }

            var from = (int)(offset - start);
            if (_covered.AsSpan(from, (int)count).Contains(true))
            {
                return false;
            }

            _covered.AsSpan(from, (int)count).Fill(true);
            Covered += count;
            return true;
        }
    }
}

/// <summary>What a client makes of NBD_REP_* replies: the values the test compares.</summary>
internal abstract record OptionReplyValue(NbdOption Option);

internal sealed record AckReply(NbdOption Option) : OptionReplyValue(Option);

internal sealed record ExportInfoReply(NbdOption Option, ulong Size, NbdTransmissionFlags Flags) : OptionReplyValue(Option);

internal sealed record BlockSizeInfoReply(NbdOption Option, NbdBlockSizes Sizes) : OptionReplyValue(Option);

internal sealed record TextInfoReply(NbdOption Option, NbdInfoType Type, string Text) : OptionReplyValue(Option);

internal sealed record MetaContextReply(NbdOption Option, uint Id, string Name) : OptionReplyValue(Option);

internal sealed record ServerReply(NbdOption Option, string Name, string Description) : OptionReplyValue(Option);

internal sealed record ErrorReply(NbdOption Option, NbdOptionReplyType Type, string Message) : OptionReplyValue(Option);

/// <summary>Decodes a sequence of option replies the way the negotiator does: header, option check, cap, payload.</summary>
internal static class OptionReplyReader
{
    public const uint MaxReply = 64 * 1024;

    public static (StreamOutcome Outcome, List<OptionReplyValue> Values) Read(ReadOnlySpan<byte> stream, IReadOnlyList<NbdOption> expectedOptions)
    {
        var values = new List<OptionReplyValue>();
        var at = 0;
        foreach (var option in expectedOptions)
        {
            if (!NbdHandshakeCodec.TryReadOptionReplyHeader(stream[at..], out var header))
            {
                return (StreamOutcome.NeedMore, values);
            }

            if (header.Option != option)
            {
                throw new NbdProtocolException($"reply to {NbdNames.Option(header.Option)} where {NbdNames.Option(option)} was asked");
            }

            if (header.Length > MaxReply)
            {
                throw new NbdProtocolException($"option reply of {header.Length} bytes is over the cap");
            }

            if ((uint)(stream.Length - at - NbdSizes.OptionReplyHeader) < header.Length)
            {
                return (StreamOutcome.NeedMore, values);
            }

            var payload = stream.Slice(at + NbdSizes.OptionReplyHeader, (int)header.Length);
            at += NbdSizes.OptionReplyHeader + (int)header.Length;
            values.Add(Decode(header, payload));
        }

        return (StreamOutcome.Done, values);
    }

    private static OptionReplyValue Decode(NbdOptionReplyHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.IsError)
        {
            return new ErrorReply(header.Option, header.ReplyType, NbdStrings.DecodeMessage(payload));
        }

        switch (header.ReplyType)
        {
            case NbdOptionReplyType.Ack:
                if (payload.Length != 0)
                {
                    throw new NbdProtocolException("NBD_REP_ACK with a payload");
                }

                return new AckReply(header.Option);
            case NbdOptionReplyType.Info:
                var info = NbdHandshakeCodec.ParseInfo(payload);
                switch (info.Type)
                {
                    case NbdInfoType.Export:
                        return new ExportInfoReply(header.Option, info.ExportSize, info.Flags);
                    case NbdInfoType.BlockSize:
                        info.BlockSizes.Validate();
                        return new BlockSizeInfoReply(header.Option, info.BlockSizes);
                    case NbdInfoType.Name:
                    case NbdInfoType.Description:
                        Assert.NotNull(info.Text);
                        return new TextInfoReply(header.Option, info.Type, info.Text);
                    default:
                        return new TextInfoReply(header.Option, info.Type, "(ignored)");
                }

            case NbdOptionReplyType.MetaContext:
                var id = NbdHandshakeCodec.ParseMetaContext(payload, out var name);
                return new MetaContextReply(header.Option, id, name);
            case NbdOptionReplyType.Server:
                var export = NbdHandshakeCodec.ParseServer(payload, out var description);
                return new ServerReply(header.Option, export, description);
            default:
                throw new NbdProtocolException($"unexpected {NbdNames.OptionReply(header.ReplyType)}");
        }
    }
}
