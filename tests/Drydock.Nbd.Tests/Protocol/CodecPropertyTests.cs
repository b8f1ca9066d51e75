using System.Buffers.Binary;
using System.Numerics;
using System.Text;
using Drydock.Nbd.Protocol;
using FsCheck;
using FsCheck.Fluent;
using Xunit;

namespace Drydock.Nbd.Tests.Protocol;

/// <summary>
/// Random valid replies round-trip through the codec; random truncations need more bytes; random corruptions
/// of one field (a flipped byte, or a small delta on a number) are rejected with <see cref="NbdProtocolException"/>
/// or, where the corrupted value is still valid, decode consistently. Any other exception type fails the property.
/// Streams are driven through the decoders by <see cref="ReplyStreamReader"/>, which checks the validators
/// against a naive oracle as it goes.
/// </summary>
public sealed class CodecPropertyTests
{
    private const int RoundTrips = 200;
    private const int Corruptions = 600;

    private static readonly Gen<ulong> AnyUInt64 = Gen.ArrayOf(Gen.Choose(0, 0xffff), 4)
        .Select(w => ((ulong)(uint)w[0] << 48) | ((ulong)(uint)w[1] << 32) | ((ulong)(uint)w[2] << 16) | (uint)w[3]);

    private static readonly Gen<uint> AnyUInt32 = Gen.Two(Gen.Choose(0, 0xffff)).Select(w => ((uint)w.Item1 << 16) | (uint)w.Item2);

    private static readonly Gen<NbdErrorCode> ErrorCodes = Gen.Frequency(
        (4, Gen.Elements(NbdErrorCode.PermissionDenied, NbdErrorCode.IOError, NbdErrorCode.OutOfMemory, NbdErrorCode.InvalidArgument, NbdErrorCode.NoSpace, NbdErrorCode.Overflow, NbdErrorCode.NotSupported, NbdErrorCode.Shutdown)),
        (1, AnyUInt32.Where(code => code != 0).Select(code => (NbdErrorCode)code)));

    // ====================================================================== READ replies

    [Fact]
    public void Random_read_replies_round_trip_and_cover_the_request_exactly()
    {
        Check(ReadCases(withErrors: false), RoundTrips, c =>
        {
            var stream = Encode(c).Bytes;

            var result = ReplyStreamReader.ReadRead(stream, c.Cookie, c.Offset, c.Length);

            Assert.Equal(StreamOutcome.Done, result.Outcome);
            Assert.Equal(stream.Length, result.Consumed);
            Assert.Equal(ExpectedData(c), result.Data);
            Assert.Equal(ExpectedPieces(c), result.Pieces);
            Assert.Empty(result.Errors);
        });
    }

    [Fact]
    public void Random_read_replies_with_error_chunks_round_trip_their_errors()
    {
        Check(ReadCases(withErrors: true), RoundTrips, c =>
        {
            var stream = Encode(c).Bytes;

            var result = ReplyStreamReader.ReadRead(stream, c.Cookie, c.Offset, c.Length);

            Assert.Equal(StreamOutcome.Done, result.Outcome);
            Assert.Equal(ExpectedPieces(c), result.Pieces);
            Assert.Equal(ExpectedErrors(c), result.Errors);
            Assert.NotEmpty(result.Errors);
        });
    }

    [Fact]
    public void Truncated_read_reply_needs_more_bytes_and_bytes_after_a_complete_one_are_not_read()
    {
        var cases = ReadCases(withErrors: true).SelectMany(c => Gen.Choose(0, Encode(c).Bytes.Length - 1).Select(cut => (Case: c, Cut: cut)));
        Check(cases, RoundTrips, t =>
        {
            var stream = Encode(t.Case).Bytes;

            var truncated = ReplyStreamReader.ReadRead(stream.AsSpan(0, t.Cut), t.Case.Cookie, t.Case.Offset, t.Case.Length);
            var followed = ReplyStreamReader.ReadRead(Wire.Concat(stream, Wire.Hex("668e33ef 0001 0000")), t.Case.Cookie, t.Case.Offset, t.Case.Length);

            Assert.Equal(StreamOutcome.NeedMore, truncated.Outcome);
            Assert.True(truncated.Consumed <= t.Cut);
            Assert.Equal(StreamOutcome.Done, followed.Outcome);
            Assert.Equal(stream.Length, followed.Consumed);
        });
    }

    [Fact]
    public void Every_prefix_of_one_multi_chunk_read_reply_needs_more_bytes()
    {
        var c = new ReadCase(
            Cookie: 0xfeed,
            Offset: 1 << 20,
            Length: 64,
            Chunks: [new HoleSpec(16, 16), new DataSpec(0, [.. Enumerable.Range(1, 16).Select(i => (byte)i)]), new ErrorSpec(NbdErrorCode.IOError, "é", 40), new DataSpec(32, new byte[32])],
            FinalNone: true);
        var stream = Encode(c).Bytes;

        for (var cut = 0; cut < stream.Length; cut++)
        {
            Assert.Equal(StreamOutcome.NeedMore, ReplyStreamReader.ReadRead(stream.AsSpan(0, cut), c.Cookie, c.Offset, c.Length).Outcome);
        }

        var result = ReplyStreamReader.ReadRead(stream, c.Cookie, c.Offset, c.Length);
        Assert.Equal([new NbdErrorChunk(NbdErrorCode.IOError, "é", (1 << 20) + 40)], result.Errors);
    }

    [Fact]
    public void Corrupting_one_field_of_a_read_reply_is_rejected_or_decoded_consistently()
    {
        var corruptions = ReadCases(withErrors: true).SelectMany(c => Corrupt(Encode(c)).Select(m => (Case: c, Mutation: m)));
        Check(corruptions, Corruptions, t =>
        {
            var (c, m) = t;
            var original = ReplyStreamReader.ReadRead(m.Original, c.Cookie, c.Offset, c.Length);

            var (result, violation) = Attempt(() => ReplyStreamReader.ReadRead(m.Corrupted, c.Cookie, c.Offset, c.Length));

            switch (m.Field.Field)
            {
                case WireField.Magic:
                case WireField.Cookie:
                    Assert.NotNull(violation);
                    break;
                case WireField.Flags when !m.TouchesDoneBit:
                    // Clients ignore flags they do not know.
                    Assert.Null(violation);
                    Assert.Equivalent(original, result, strict: true);
                    break;
                case WireField.Data:
                    Assert.Null(violation);
                    var expected = original.Data.ToArray();
                    var dataStart = (int)(BinaryPrimitives.ReadUInt64BigEndian(m.Original.AsSpan(m.Field.Start - 8)) - c.Offset);
                    m.Corrupted.AsSpan(m.Field.Start, m.Field.Length).CopyTo(expected.AsSpan(dataStart));
                    Assert.Equal(expected, result!.Data);
                    break;
                case WireField.Message:
                    Assert.Null(violation);
                    Assert.Equal(original.Errors.Select(e => (e.Error, e.Offset)), result!.Errors.Select(e => (e.Error, e.Offset)));
                    break;
                case WireField.ErrorCode:
                    var code = BinaryPrimitives.ReadUInt32BigEndian(m.Corrupted.AsSpan(m.Field.Start));
                    Assert.Equal(code == 0, violation is not null);
                    Assert.True(violation is not null || result!.Errors.Any(e => (uint)e.Error == code));
                    break;
                default:
                    // Lengths, types, offsets, sizes, the DONE bit: the reader's oracle has judged every range the
                    // validators saw. Whatever still decodes as a successful reply covers the request exactly once.
                    if (result is { Outcome: StreamOutcome.Done, Errors.Count: 0 })
                    {
                        Assert.Equal(c.Length, result.Pieces.Aggregate(0UL, (sum, piece) => sum + piece.Length));
                    }

                    break;
            }
        });
    }

    [Fact]
    public void Read_reply_repeating_a_content_chunk_is_rejected_whether_added_or_in_place_of_another()
    {
        // In place of another piece, the byte count can still add up: only coverage tracking catches it.
        var cases =
            from c in ReadCases(withErrors: false).Where(c => c.Chunks.Length >= 2)
            from source in Gen.Choose(0, c.Chunks.Length - 1)
            from target in Gen.Choose(0, c.Chunks.Length - 1)
            from replace in Gen.Elements(true, false)
            select (Case: c, Source: source, Target: target, Replace: replace && source != target);
        Check(cases, RoundTrips, t =>
        {
            var chunks = t.Case.Chunks.ToList();
            if (t.Replace)
            {
                chunks[t.Target] = chunks[t.Source];
            }
            else
            {
                chunks.Insert(t.Target, chunks[t.Source]);
            }

            var c = t.Case with { Chunks = [.. chunks], FinalNone = true };

            var (_, violation) = Attempt(() => ReplyStreamReader.ReadRead(Encode(c).Bytes, c.Cookie, c.Offset, c.Length));

            Assert.NotNull(violation);
            Assert.Contains("overlaps", violation.Message, StringComparison.Ordinal);
        });
    }

    [Fact]
    public void Read_reply_missing_a_content_chunk_is_rejected_at_done_naming_the_first_missing_byte()
    {
        var cases =
            from c in ReadCases(withErrors: false).Where(c => c.Chunks.Length >= 2)
            from dropped in Gen.Choose(0, c.Chunks.Length - 1)
            select (Case: c, Dropped: dropped);
        Check(cases, RoundTrips, t =>
        {
            var missing = t.Case.Chunks[t.Dropped] switch
            {
                DataSpec data => data.Start,
                HoleSpec hole => hole.Start,
                _ => throw new InvalidOperationException("only content chunks are generated here"),
            };
            var c = t.Case with { Chunks = [.. t.Case.Chunks.Where((_, i) => i != t.Dropped)], FinalNone = true };

            var (_, violation) = Attempt(() => ReplyStreamReader.ReadRead(Encode(c).Bytes, c.Cookie, c.Offset, c.Length));

            Assert.NotNull(violation);
            Assert.EndsWith($"missing from offset {c.Offset + missing}", violation.Message, StringComparison.Ordinal);
        });
    }

    // ====================================================================== BLOCK_STATUS replies

    [Fact]
    public void Random_block_status_replies_round_trip_with_absolute_offsets()
    {
        Check(BlockStatusCases(), RoundTrips, c =>
        {
            var stream = Encode(c).Bytes;

            var result = ReplyStreamReader.ReadBlockStatus(stream, c.Cookie, c.Offset, c.Length, c.RequestOne, c.ExportSize, c.ContextMap);

            Assert.Equal(StreamOutcome.Done, result.Outcome);
            Assert.Equal(stream.Length, result.Consumed);
            Assert.Equal(c.Contexts.Length, result.Extents.Count);
            foreach (var context in c.Contexts)
            {
                Assert.Equal(ExpectedExtents(c, context), result.Extents[context.Name]);
            }
        });
    }

    [Fact]
    public void Truncated_block_status_reply_needs_more_bytes()
    {
        var cases = BlockStatusCases().SelectMany(c => Gen.Choose(0, Encode(c).Bytes.Length - 1).Select(cut => (Case: c, Cut: cut)));
        Check(cases, RoundTrips, t =>
        {
            var c = t.Case;
            var result = ReplyStreamReader.ReadBlockStatus(Encode(c).Bytes.AsSpan(0, t.Cut), c.Cookie, c.Offset, c.Length, c.RequestOne, c.ExportSize, c.ContextMap);

            Assert.Equal(StreamOutcome.NeedMore, result.Outcome);
        });
    }

    [Fact]
    public void Corrupting_one_field_of_a_block_status_reply_is_rejected_or_decoded_consistently()
    {
        var corruptions = BlockStatusCases().SelectMany(c => Corrupt(Encode(c)).Select(m => (Case: c, Mutation: m)));
        Check(corruptions, Corruptions, t =>
        {
            var (c, m) = t;
            var original = ReplyStreamReader.ReadBlockStatus(m.Original, c.Cookie, c.Offset, c.Length, c.RequestOne, c.ExportSize, c.ContextMap);

            var (result, violation) = Attempt(() => ReplyStreamReader.ReadBlockStatus(m.Corrupted, c.Cookie, c.Offset, c.Length, c.RequestOne, c.ExportSize, c.ContextMap));

            switch (m.Field.Field)
            {
                case WireField.Magic:
                case WireField.Cookie:
                case WireField.ContextId:
                    // A changed id is unknown, or names a context that then answers twice.
                    Assert.NotNull(violation);
                    break;
                case WireField.Flags when !m.TouchesDoneBit:
                    Assert.Null(violation);
                    Assert.Equivalent(original, result, strict: true);
                    break;
                case WireField.DescriptorFlags:
                    // Status flags carry no framing: only the one extent's flags change.
                    Assert.Null(violation);
                    var changed = result!.Extents.SelectMany(p => p.Value.Select((e, i) => (p.Key, i, e)))
                        .Where(x => x.e != original.Extents[x.Key][x.i])
                        .ToList();
                    var single = Assert.Single(changed);
                    Assert.Equal(original.Extents[single.Key][single.i] with { Flags = single.e.Flags }, single.e);
                    break;
                default:
                    // Whatever still decodes as a successful reply maps every context contiguously from the offset.
                    if (result is { Outcome: StreamOutcome.Done, Errors.Count: 0 })
                    {
                        Assert.Equal(c.Contexts.Length, result.Extents.Count);
                        foreach (var extents in result.Extents.Values)
                        {
                            Assert.Equal(c.Offset, extents[0].Offset);
                            Assert.All(extents.Zip(extents.Skip(1)), pair => Assert.Equal(pair.First.End, pair.Second.Offset));
                        }
                    }

                    break;
            }
        });
    }

    [Fact]
    public void Block_status_reply_answering_a_context_twice_or_leaving_one_out_is_rejected()
    {
        var cases =
            from c in BlockStatusCases()
            from index in Gen.Choose(0, c.Contexts.Length - 1)
            from twice in Gen.Elements(true, false)
            select (Case: c, Index: index, Twice: twice);
        Check(cases, RoundTrips, t =>
        {
            var contexts = t.Case.Contexts.ToList();
            if (t.Twice)
            {
                contexts.Add(contexts[t.Index]);
            }
            else
            {
                contexts.RemoveAt(t.Index);
            }

            var c = t.Case with { Contexts = [.. contexts], FinalNone = true };

            var (_, violation) = Attempt(() => ReplyStreamReader.ReadBlockStatus(Encode(c).Bytes, c.Cookie, c.Offset, c.Length, c.RequestOne, c.ExportSize, t.Case.ContextMap));

            Assert.NotNull(violation);
            Assert.Contains(t.Twice ? "twice" : "without extents", violation.Message, StringComparison.Ordinal);
        });
    }

    // ====================================================================== option replies

    [Fact]
    public void Random_option_replies_and_info_round_trip_to_equal_values()
    {
        Check(OptionReplySequences(), RoundTrips, replies =>
        {
            var (stream, options) = Encode(replies);

            var (outcome, values) = OptionReplyReader.Read(stream.Bytes, options);

            Assert.Equal(StreamOutcome.Done, outcome);
            Assert.Equal(replies.Select(r => r.Expected), values);
        });
    }

    [Fact]
    public void Truncated_and_corrupted_option_replies_need_more_or_are_rejected()
    {
        var cases = OptionReplySequences().SelectMany(r =>
        {
            var (stream, _) = Encode(r);
            return Gen.Zip(Corrupt(stream), Gen.Choose(0, stream.Bytes.Length - 1))
                .Select(p => (Replies: r, Mutation: p.Item1, Cut: p.Item2));
        });
        Check(cases, Corruptions, t =>
        {
            var (stream, options) = Encode(t.Replies);
            Assert.Equal(StreamOutcome.NeedMore, OptionReplyReader.Read(stream.Bytes.AsSpan(0, t.Cut), options).Outcome);

            var (result, violation) = Attempt(() => OptionReplyReader.Read(t.Mutation.Corrupted, options));

            if (t.Mutation.Field.Field is WireField.Magic or WireField.Option)
            {
                Assert.NotNull(violation);
            }
            else if (result.Outcome == StreamOutcome.Done)
            {
                Assert.Equal(t.Replies.Length, result.Values.Count);
            }
        });
    }

    // ====================================================================== payload parsers on arbitrary bytes

    [Fact]
    public void Payload_parsers_given_arbitrary_bytes_accept_only_well_formed_ones_and_reject_with_protocol_exceptions()
    {
        var payloads = Gen.Frequency(
            (3, Gen.Choose(0, 40).SelectMany(n => Gen.ArrayOf(Gen.Choose(0, 255).Select(b => (byte)b), n))),
            (1, Gen.Choose(0, 40).SelectMany(n => Gen.ArrayOf(Gen.Elements<byte>(0x00, 0x01, 0x08, 0x0c, 0x10, 0x80, 0xc3, 0xff), n))));
        var cases = Gen.Zip(payloads, Gen.Elements<ushort>(0x8001, 0x8002, 0x8123, 0xffff));

        Check(cases, Corruptions, t =>
        {
            var (payload, errorType) = t;
            var (info, infoViolation) = Attempt(() => NbdHandshakeCodec.ParseInfo(payload));
            Assert.True(infoViolation is not null || info.Type switch
            {
                NbdInfoType.Export => payload.Length == 12,
                NbdInfoType.BlockSize => payload.Length == 14,
                _ => payload.Length >= 2,
            });
            var (_, holeViolation) = Attempt(() => NbdTransmissionCodec.ParseOffsetHole(payload, out _));
            Assert.Equal(payload.Length == 12 && BinaryPrimitives.ReadUInt32BigEndian(payload.AsSpan(8)) != 0, holeViolation is null);
            var (_, statusViolation) = Attempt(() => NbdTransmissionCodec.ParseBlockStatus(payload, out _));
            Assert.Equal(payload.Length >= 12 && (payload.Length - 4) % 8 == 0, statusViolation is null);
            var (_, contextViolation) = Attempt(() => NbdHandshakeCodec.ParseMetaContext(payload, out _));
            Assert.True(contextViolation is not null || payload.Length >= 5);
            Attempt(() => NbdHandshakeCodec.ParseServer(payload, out _));
            Attempt(() => NbdHandshakeCodec.ParseExportInfoRequest(payload, out _));
            Attempt(() => NbdHandshakeCodec.ParseMetaContextRequest(payload, out _));
            Attempt(() => NbdHandshakeCodec.TryReadServerGreeting(payload, out _));
            Attempt(() => NbdHandshakeCodec.TryReadOptionHeader(payload, out _));
            Attempt(() => NbdHandshakeCodec.TryReadOptionReplyHeader(payload, out _));
            Attempt(() => NbdTransmissionCodec.TryReadRequest(payload, out _));
            Attempt(() => NbdTransmissionCodec.TryReadReplyHeader(payload, true, out _, out _));
            var (error, violation) = Attempt(() => NbdTransmissionCodec.ParseErrorChunk(payload, (NbdReplyChunkType)errorType));
            Assert.True(violation is not null || (error.Error != NbdErrorCode.None && error.Message.Length <= NbdSizes.MaxString));
        });
    }

    [Fact]
    public void Block_size_validation_accepts_exactly_the_consistent_triples()
    {
        var sizes = Gen.Frequency(
            (2, Gen.Choose(0, 20).Select(p => 1u << p)),
            (1, Gen.Elements(0u, 3u, 1000u, 3u * 65536, 0xffff_fffeu, 0xffff_ffffu)),
            (1, AnyUInt32));
        Check(Gen.Three(sizes), Corruptions, t =>
        {
            var (minimum, preferred, maximum) = t;
            var consistent = BitOperations.IsPow2(minimum) && minimum <= 65536
                && BitOperations.IsPow2(preferred) && preferred >= minimum
                && maximum >= minimum && (maximum == uint.MaxValue || maximum % minimum == 0);

            var (_, violation) = Attempt(() =>
            {
                new NbdBlockSizes(minimum, preferred, maximum).Validate();
                return true;
            });

            Assert.Equal(consistent, violation is null);
        });
    }

    // ====================================================================== READ generators and encoders

    private abstract record ChunkSpec;

    private sealed record DataSpec(uint Start, byte[] Bytes) : ChunkSpec
    {
        public override string ToString() => $"Data(+{Start}, {Bytes.Length} bytes)";
    }

    private sealed record HoleSpec(uint Start, uint Length) : ChunkSpec;

    private sealed record ErrorSpec(NbdErrorCode Code, string Message, uint? At) : ChunkSpec;

    private sealed record ReadCase(ulong Cookie, ulong Offset, uint Length, ChunkSpec[] Chunks, bool FinalNone)
    {
        public override string ToString() => $"READ [{Offset}, +{Length}) cookie {Cookie}: {string.Join(", ", Chunks.Select(c => c.ToString()))}{(FinalNone ? ", NONE" : string.Empty)}";
    }

    private static Gen<ReadCase> ReadCases(bool withErrors) =>
        from length in Gen.Frequency((4, Gen.Choose(1, 2048)), (1, Gen.Choose(1, 8)))
        from offset in Gen.Frequency(
            (3, Gen.Choose(0, 1 << 20).Select(block => (ulong)block * 512)),
            (2, AnyUInt64.Select(o => Math.Min(o, ulong.MaxValue - (ulong)length))),
            (1, Gen.Constant(ulong.MaxValue - (ulong)length)))
        from cookie in AnyUInt64
        from cuts in Gen.ListOf(Gen.Choose(1, Math.Max(1, length - 1)))
        from pieces in Pieces(length, cuts)
        from errors in withErrors ? Gen.Choose(1, 3).SelectMany(n => Gen.ArrayOf(Errors(length), n)) : Gen.Constant(Array.Empty<ErrorSpec>())
        from kept in withErrors ? Gen.SubListOf(pieces).Select(l => l.ToArray()) : Gen.Constant(pieces)
        from order in Gen.Shuffle(kept.Concat(errors).ToArray())
        from finalNone in Gen.Elements(true, false)
        select new ReadCase(cookie, offset, (uint)length, order, finalNone || order.Length == 0);

    private static Gen<ChunkSpec[]> Pieces(int length, IEnumerable<int> cuts)
    {
        var bounds = cuts.Where(c => c < length).Append(0).Append(length).Distinct().Order().ToArray();
        var count = bounds.Length - 1;
        return Gen.Zip(Gen.ArrayOf(Gen.Elements(true, false), count), Gen.Choose(0, int.MaxValue)).Select(t =>
        {
            var random = new Random(t.Item2);
            var pieces = new ChunkSpec[count];
            for (var i = 0; i < count; i++)
            {
                var start = (uint)bounds[i];
                var size = (uint)(bounds[i + 1] - bounds[i]);
                if (t.Item1[i])
                {
                    pieces[i] = new HoleSpec(start, size);
                }
                else
                {
                    var bytes = new byte[size];
                    random.NextBytes(bytes);
                    pieces[i] = new DataSpec(start, bytes);
                }
            }

            return pieces;
        });
    }

    private static Gen<ErrorSpec> Errors(int length) =>
        from code in ErrorCodes
        from message in Text(maxRunes: 30)
        from at in Gen.Frequency((3, Gen.Choose(0, length - 1).Select(a => (uint?)a)), (1, Gen.Constant<uint?>(null)))
        select new ErrorSpec(code, message, at);

    private static WireStreamBuilder Encode(ReadCase c)
    {
        var builder = new WireStreamBuilder();
        for (var i = 0; i < c.Chunks.Length; i++)
        {
            var flags = i == c.Chunks.Length - 1 && !c.FinalNone ? NbdReplyFlags.Done : NbdReplyFlags.None;
            switch (c.Chunks[i])
            {
                case DataSpec data:
                    var payload = new byte[8 + data.Bytes.Length];
                    NbdTransmissionCodec.WriteOffsetDataOffset(payload, c.Offset + data.Start);
                    data.Bytes.CopyTo(payload, 8);
                    builder.Chunk(flags, NbdReplyChunkType.OffsetData, c.Cookie, payload, new(WireField.DataOffset, 0, 8), new(WireField.Data, 8, data.Bytes.Length));
                    break;
                case HoleSpec hole:
                    var holePayload = new byte[12];
                    NbdTransmissionCodec.WriteOffsetHole(holePayload, c.Offset + hole.Start, hole.Length);
                    builder.Chunk(flags, NbdReplyChunkType.OffsetHole, c.Cookie, holePayload, new(WireField.HoleOffset, 0, 8), new(WireField.HoleSize, 8, 4));
                    break;
                case ErrorSpec error:
                    var errorPayload = NbdTransmissionCodec.BuildErrorChunk(error.Code, error.Message, c.Offset + error.At);
                    var messageLength = Encoding.UTF8.GetByteCount(error.Message);
                    builder.Chunk(
                        flags,
                        error.At.HasValue ? NbdReplyChunkType.ErrorOffset : NbdReplyChunkType.Error,
                        c.Cookie,
                        errorPayload,
                        new(WireField.ErrorCode, 0, 4),
                        new(WireField.MessageLength, 4, 2),
                        new(WireField.Message, 6, messageLength),
                        new(WireField.ErrorOffset, 6 + messageLength, error.At.HasValue ? 8 : 0));
                    break;
            }
        }

        if (c.FinalNone)
        {
            builder.Chunk(NbdReplyFlags.Done, NbdReplyChunkType.None, c.Cookie, []);
        }

        return builder;
    }

    private static byte[] ExpectedData(ReadCase c)
    {
        var data = new byte[c.Length];
        foreach (var piece in c.Chunks.OfType<DataSpec>())
        {
            piece.Bytes.CopyTo(data, piece.Start);
        }

        return data;
    }

    private static List<ContentPiece> ExpectedPieces(ReadCase c) =>
    [
        .. c.Chunks.Select(chunk => chunk switch
        {
            DataSpec data => (ContentPiece?)new ContentPiece(NbdReplyChunkType.OffsetData, c.Offset + data.Start, (ulong)data.Bytes.Length),
            HoleSpec hole => new ContentPiece(NbdReplyChunkType.OffsetHole, c.Offset + hole.Start, hole.Length),
            _ => null,
        }).OfType<ContentPiece>(),
    ];

    private static List<NbdErrorChunk> ExpectedErrors(ReadCase c) =>
        [.. c.Chunks.OfType<ErrorSpec>().Select(e => new NbdErrorChunk(e.Code, e.Message, c.Offset + e.At))];

    // ====================================================================== BLOCK_STATUS generators and encoders

    private sealed record ContextAnswer(uint Id, string Name, NbdBlockDescriptor[] Descriptors)
    {
        public override string ToString() => $"{Name}#{Id}: [{string.Join(", ", Descriptors.Select(d => $"{d.Length}/{d.Flags}"))}]";
    }

    private sealed record BlockStatusCase(ulong Cookie, ulong Offset, uint Length, bool RequestOne, ulong ExportSize, ContextAnswer[] Contexts, bool FinalNone)
    {
        public Dictionary<uint, string> ContextMap => Contexts.ToDictionary(c => c.Id, c => c.Name);

        public override string ToString() => $"BLOCK_STATUS [{Offset}, +{Length}) of {ExportSize}{(RequestOne ? " REQ_ONE" : string.Empty)}: {string.Join("; ", Contexts.Select(c => c.ToString()))}";
    }

    private static Gen<BlockStatusCase> BlockStatusCases() =>
        from length in Gen.Frequency((3, Gen.Choose(1, 1 << 20)), (1, Gen.Choose(1, 16)), (1, Gen.Constant(int.MaxValue)))
        from offset in Gen.Frequency(
            (3, Gen.Choose(0, 1 << 20).Select(b => (ulong)b * 512)),
            (1, AnyUInt64.Select(o => o >> 2)),
            (1, Gen.Choose(0, 1 << 20).Select(o => ulong.MaxValue - (ulong)length - (ulong)o))) // the top of the offset space
        from extra in Gen.Frequency((2, Gen.Choose(0, 1 << 22).Select(e => (ulong)e)), (1, Gen.Constant(0UL)), (1, AnyUInt64))
        let exportSize = offset + (ulong)length + Math.Min(extra, ulong.MaxValue - offset - (ulong)length)
        from requestOne in Gen.Frequency((3, Gen.Constant(false)), (1, Gen.Constant(true)))
        from count in Gen.Choose(1, 3)
        from ids in Gen.ArrayOf(AnyUInt32, count).Where(a => a.Distinct().Count() == a.Length)
        from names in Gen.ArrayOf(ContextNames(), count).Where(a => a.Distinct(StringComparer.Ordinal).Count() == a.Length)
        from answers in Gen.ArrayOf(Descriptors(offset, (uint)length, requestOne, exportSize), count)
        from cookie in AnyUInt64
        from finalNone in Gen.Elements(true, false)
        select new BlockStatusCase(cookie, offset, (uint)length, requestOne, exportSize, [.. ids.Select((id, i) => new ContextAnswer(id, names[i], answers[i]))], finalNone);

    private static Gen<string> ContextNames() => Gen.Frequency(
        (2, Gen.Constant(NbdContexts.BaseAllocation)),
        (2, Text(maxRunes: 20).Select(NbdContexts.DirtyBitmap)),
        (1, Gen.Constant(NbdContexts.AllocationDepth)));

    private static Gen<NbdBlockDescriptor[]> Descriptors(ulong offset, uint length, bool requestOne, ulong exportSize)
    {
        var room = exportSize - offset;
        var flags = Gen.Frequency((4, Gen.Choose(0, 3).Select(f => (uint)f)), (1, AnyUInt32));
        if (requestOne)
        {
            var most = Math.Min(length, room);
            return Gen.Zip(Below(most), flags).Select(t => new[] { new NbdBlockDescriptor((uint)t.Item1, t.Item2) });
        }

        // The first N-1 extents end strictly inside the request; the last may stop short of its end or run past it.
        var cuts = length > 1
            ? Gen.Choose(0, 7).SelectMany(n => Gen.ArrayOf(Gen.Choose(1, (int)(length - 1)), n))
            : Gen.Constant(Array.Empty<int>());
        return cuts.SelectMany(raw =>
        {
            var bounds = raw.Distinct().Order().Select(c => (ulong)c).Prepend(0UL).ToArray();
            var last = bounds[^1];
            var longest = Math.Min(room - last, uint.MaxValue);
            var final = Gen.Frequency(
                (2, Gen.Constant(length - last)),
                (1, Below(Math.Min(length - last, longest))),
                (1, Below(longest)));
            return Gen.Zip(final, Gen.ArrayOf(flags, bounds.Length)).Select(t =>
            {
                var descriptors = new NbdBlockDescriptor[bounds.Length];
                for (var i = 0; i < bounds.Length - 1; i++)
                {
                    descriptors[i] = new NbdBlockDescriptor((uint)(bounds[i + 1] - bounds[i]), t.Item2[i]);
                }

                descriptors[^1] = new NbdBlockDescriptor((uint)t.Item1, t.Item2[^1]);
                return descriptors;
            });
        });
    }

    /// <summary>A number in [1, <paramref name="most"/>].</summary>
    private static Gen<ulong> Below(ulong most) => AnyUInt64.Select(x => 1 + (x % most));

    private static WireStreamBuilder Encode(BlockStatusCase c)
    {
        var builder = new WireStreamBuilder();
        for (var i = 0; i < c.Contexts.Length; i++)
        {
            var answer = c.Contexts[i];
            var flags = i == c.Contexts.Length - 1 && !c.FinalNone ? NbdReplyFlags.Done : NbdReplyFlags.None;
            var fields = new List<FieldSpan> { new(WireField.ContextId, 0, 4) };
            for (var d = 0; d < answer.Descriptors.Length; d++)
            {
                fields.Add(new(WireField.DescriptorLength, 4 + (d * 8), 4));
                fields.Add(new(WireField.DescriptorFlags, 8 + (d * 8), 4));
            }

            builder.Chunk(flags, NbdReplyChunkType.BlockStatus, c.Cookie, NbdTransmissionCodec.BuildBlockStatus(answer.Id, answer.Descriptors), [.. fields]);
        }

        if (c.FinalNone)
        {
            builder.Chunk(NbdReplyFlags.Done, NbdReplyChunkType.None, c.Cookie, []);
        }

        return builder;
    }

    private static List<NbdExtent> ExpectedExtents(BlockStatusCase c, ContextAnswer answer)
    {
        var extents = new List<NbdExtent>();
        var at = c.Offset;
        foreach (var descriptor in answer.Descriptors)
        {
            extents.Add(new NbdExtent(at, descriptor.Length, descriptor.Flags));
            at += descriptor.Length;
        }

        return extents;
    }

    // ====================================================================== option reply generators and encoders

    private sealed record OptionReplySpec(NbdOption Option, NbdOptionReplyType Type, byte[] Payload, FieldSpan[] Fields, OptionReplyValue Expected)
    {
        public override string ToString() => Expected.ToString();
    }

    private static Gen<OptionReplySpec[]> OptionReplySequences() =>
        Gen.Choose(1, 6).SelectMany(n => Gen.ArrayOf(OptionReplies(), n));

    private static Gen<OptionReplySpec> OptionReplies()
    {
        var infoOption = Gen.Elements(NbdOption.Info, NbdOption.Go);
        var anyOption = Gen.Elements(Enum.GetValues<NbdOption>());
        var export =
            from option in infoOption
            from size in AnyUInt64
            from flags in Gen.Choose(0, 0xffff)
            select new OptionReplySpec(option, NbdOptionReplyType.Info, NbdHandshakeCodec.BuildExportInfo(size, (NbdTransmissionFlags)flags), [new(WireField.InfoType, 0, 2), new(WireField.InfoBody, 2, 10)], new ExportInfoReply(option, size, (NbdTransmissionFlags)flags));
        var blockSize =
            from option in infoOption
            from sizes in BlockSizes()
            select new OptionReplySpec(option, NbdOptionReplyType.Info, NbdHandshakeCodec.BuildBlockSizeInfo(sizes), [new(WireField.InfoType, 0, 2), new(WireField.InfoBody, 2, 12)], new BlockSizeInfoReply(option, sizes));
        var text =
            from option in infoOption
            from type in Gen.Elements(NbdInfoType.Name, NbdInfoType.Description)
            from value in Text(maxRunes: 40)
            let payload = NbdHandshakeCodec.BuildTextInfo(type, value)
            select new OptionReplySpec(option, NbdOptionReplyType.Info, payload, [new(WireField.InfoType, 0, 2), new(WireField.Text, 2, payload.Length - 2)], new TextInfoReply(option, type, value));
        var metaContext =
            from option in Gen.Elements(NbdOption.ListMetaContext, NbdOption.SetMetaContext)
            from id in AnyUInt32
            from name in ContextNames()
            let payload = NbdHandshakeCodec.BuildMetaContext(id, name)
            select new OptionReplySpec(option, NbdOptionReplyType.MetaContext, payload, [new(WireField.MetaContextId, 0, 4), new(WireField.Text, 4, payload.Length - 4)], new MetaContextReply(option, id, name));
        var server =
            from name in Text(maxRunes: 30)
            from description in Gen.Frequency((3, Text(maxRunes: 30)), (1, Gen.Constant<string>(null!)))
            let payload = NbdHandshakeCodec.BuildServer(name, description)
            select new OptionReplySpec(NbdOption.List, NbdOptionReplyType.Server, payload, [new(WireField.MessageLength, 0, 4), new(WireField.Text, 4, payload.Length - 4)], new ServerReply(NbdOption.List, name, description ?? string.Empty));
        var ack =
            from option in anyOption
            select new OptionReplySpec(option, NbdOptionReplyType.Ack, [], [], new AckReply(option));
        var error =
            from option in anyOption
            from type in Gen.Frequency((4, Gen.Elements(Enum.GetValues<NbdOptionReplyType>().Where(t => (uint)t >= 0x8000_0000).ToArray())), (1, AnyUInt32.Select(t => (NbdOptionReplyType)(t | 0x8000_0000))))
            from message in Text(maxRunes: 40)
            let payload = Encoding.UTF8.GetBytes(message)
            select new OptionReplySpec(option, type, payload, [new(WireField.Text, 0, payload.Length)], new ErrorReply(option, type, message));
        return Gen.Frequency((2, export), (2, blockSize), (1, text), (2, metaContext), (1, server), (1, ack), (1, error));
    }

    private static Gen<NbdBlockSizes> BlockSizes() =>
        from minimumPower in Gen.Choose(0, 16)
        from preferredPower in Gen.Choose(Math.Max(minimumPower, 9), 24)
        from multiple in Gen.Choose(1, 64)
        from unlimited in Gen.Elements(true, false)
        select new NbdBlockSizes(1u << minimumPower, 1u << preferredPower, unlimited ? uint.MaxValue : (1u << preferredPower) * (uint)multiple);

    private static (WireStreamBuilder Stream, NbdOption[] Options) Encode(OptionReplySpec[] replies)
    {
        var builder = new WireStreamBuilder();
        foreach (var reply in replies)
        {
            builder.OptionReply(reply.Option, reply.Type, reply.Payload, reply.Fields);
        }

        return (builder, [.. replies.Select(r => r.Option)]);
    }

    // ====================================================================== shared

    private sealed record Mutation(byte[] Original, byte[] Corrupted, FieldSpan Field, string Change)
    {
        /// <summary>Whether bit 0 (DONE) of the low flags byte changed.</summary>
        public bool TouchesDoneBit => Field.Field == WireField.Flags && ((Original[Field.Start + 1] ^ Corrupted[Field.Start + 1]) & 1) != 0;

        public override string ToString() => $"{Field.Field} at {Field.Start}: {Change}";
    }

    /// <summary>
    /// One field corrupted: either one byte flipped by a non-zero mask, or a numeric field moved by a small
    /// delta (which turns offsets and lengths into overlaps, gaps and off-by-ones far more often than a
    /// random byte does). Fields are picked uniformly, so headers are hit often.
    /// </summary>
    private static Gen<Mutation> Corrupt(WireStreamBuilder stream)
    {
        var original = stream.Bytes;
        var fields = stream.Fields.ToArray();
        var flip =
            from field in Gen.Elements(fields)
            from position in Gen.Choose(field.Start, field.Start + field.Length - 1)
            from mask in Gen.Choose(1, 255)
            select new Mutation(original, Flip(original, position, (byte)mask), field, $"byte {position} ^= 0x{mask:x2}");
        var numeric = fields.Where(f => f.Length is 2 or 4 or 8 && f.Field is not (WireField.Data or WireField.Message or WireField.Text)).ToArray();
        if (numeric.Length == 0)
        {
            return flip;
        }

        var nudge =
            from field in Gen.Elements(numeric)
            from delta in Gen.Frequency((2, Gen.Choose(-600, 600).Where(d => d != 0)), (1, Gen.Elements(-1, 1)))
            select new Mutation(original, Nudge(original, field, delta), field, $"{delta:+0;-0}");
        return Gen.Frequency((1, flip), (1, nudge));
    }

    private static byte[] Flip(byte[] original, int position, byte mask)
    {
        var copy = original.ToArray();
        copy[position] ^= mask;
        return copy;
    }

    private static byte[] Nudge(byte[] original, FieldSpan field, int delta)
    {
        var copy = original.ToArray();
        var span = copy.AsSpan(field.Start, field.Length);
        ulong value = 0;
        foreach (var b in span)
        {
            value = (value << 8) | b;
        }

        value += (ulong)(long)delta; // wraps within the field's width below
        for (var i = span.Length - 1; i >= 0; i--)
        {
            span[i] = (byte)value;
            value >>= 8;
        }

        return copy;
    }

    /// <summary>Runs a decoder: a value, or the protocol violation it reported. Any other exception escapes and fails the property.</summary>
    private static (T Value, NbdProtocolException? Violation) Attempt<T>(Func<T> decode)
    {
        try
        {
            return (decode(), null);
        }
        catch (NbdProtocolException e)
        {
            Assert.False(string.IsNullOrWhiteSpace(e.Message));
            return (default!, e);
        }
    }

    // Any Unicode scalar value except NUL: what a protocol string may hold.
    private static Gen<string> Text(int maxRunes)
    {
        var ascii = Gen.Choose(1, 0x7f);
        var bmp = Gen.Choose(0x80, 0xfffd).Where(c => c is < 0xd800 or > 0xdfff);
        var astral = Gen.Choose(0x10000, 0x10ffff);
        var scalar = Gen.Frequency((6, ascii), (2, bmp), (1, astral));
        return Gen.Choose(0, maxRunes).SelectMany(n => Gen.ArrayOf(scalar, n))
            .Select(scalars => string.Concat(scalars.Select(s => new Rune(s).ToString())));
    }

    private static void Check<T>(Gen<T> generator, int runs, Action<T> property) =>
        FsCheck.Check.One(Config.QuickThrowOnFailure.WithMaxTest(runs), Prop.ForAll(Arb.From(generator), property));
}
