using System.Buffers.Binary;
using System.Net.Sockets;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Server;

/// <summary>
/// Deliberately broken replies, for tests of clients. Valid structures come from the codec; bytes the codec
/// refuses to produce (an error code of 0, a message over 4,096 bytes, a truncated payload) are written here.
/// </summary>
internal sealed partial class NbdServerConnection
{
    private const uint WrongReplyMagic = 0x0BAD_F00D;
    private const uint ClaimedHugeLength = 0xFFFF_FFF0;
    private const NbdReplyChunkType UnknownType = (NbdReplyChunkType)0x0042;
    private const NbdReplyChunkType UnknownErrorType = (NbdReplyChunkType)0x8042;

    /// <summary>Answers a request as the rule says. False means "answer it normally" (after a delay).</summary>
    private async Task<bool> InjectAsync(NbdExport export, NbdRequestFault fault, NbdRequestHeader request, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        var cookie = request.Cookie;
        var start = request.Offset;
        var end = request.Offset + request.Length;
        var half = request.Length / 2;
        using var reply = new PooledBufferWriter(256);
        switch (fault.Fault)
        {
            case NbdReplyFault.Delay:
                await Task.Delay(fault.Delay, _options.TimeProvider, cancellationToken);
                return false;
            case NbdReplyFault.Error:
                await InjectErrorAsync(export, fault, request, cancellationToken);
                return true;
            case NbdReplyFault.NoReply:
                return true;
            case NbdReplyFault.RepeatedReply:
                await ExecuteAsync(export, request, payload, cancellationToken);
                await (_structured ? SendNoneAsync(cookie, cancellationToken) : SendSimpleAsync(cookie, NbdErrorCode.None, cancellationToken));
                return true;
            case NbdReplyFault.WrongMagic:
            {
                var span = reply.GetSpan(NbdSizes.StructuredReplyHeader);
                NbdTransmissionCodec.WriteStructuredHeader(span, NbdReplyFlags.Done, NbdReplyChunkType.None, cookie, 0);
                BinaryPrimitives.WriteUInt32BigEndian(span, WrongReplyMagic);
                reply.Advance(NbdSizes.StructuredReplyHeader);
                break;
            }

            case NbdReplyFault.UnknownCookie:
                var stranger = cookie ^ 0x5A5A_0000_0000_0000;
                await (_structured ? SendNoneAsync(stranger, cancellationToken) : SendSimpleAsync(stranger, NbdErrorCode.None, cancellationToken));
                return true;
            case NbdReplyFault.SimpleReplyToStructuredRead:
            {
                var memory = reply.GetMemory(NbdSizes.SimpleReplyHeader + (int)request.Length);
                NbdTransmissionCodec.WriteSimpleReply(memory.Span, cookie, NbdErrorCode.None);
                await ReadDataAsync(export, request, memory.Slice(NbdSizes.SimpleReplyHeader, (int)request.Length), cancellationToken);
                reply.Advance(NbdSizes.SimpleReplyHeader + (int)request.Length);
                break;
            }

            case NbdReplyFault.EofInHeader:
            {
                var span = reply.GetSpan(NbdSizes.StructuredReplyHeader);
                NbdTransmissionCodec.WriteStructuredHeader(span, NbdReplyFlags.Done, NbdReplyChunkType.None, cookie, 0);
                reply.Advance(NbdSizes.StructuredReplyHeader / 2);
                await SendThenCloseAsync(reply.WrittenMemory, cancellationToken);
                return true;
            }

            case NbdReplyFault.EofInPayload:
                if (request.Command == NbdCommand.Read)
                {
                    await AppendDataAsync(reply, export, request, start, request.Length, NbdReplyFlags.Done, cancellationToken);
                    await SendThenCloseAsync(reply.WrittenMemory[..^(int)Math.Max(1, half)], cancellationToken);
                }
                else
                {
                    WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.Error, cookie, NbdTransmissionCodec.BuildErrorChunk(NbdErrorCode.IOError, new string('x', 100), null));
                    await SendThenCloseAsync(reply.WrittenMemory[..^50], cancellationToken);
                }

                return true;
            case NbdReplyFault.OversizedChunk:
            {
                var type = request.Command switch
                {
                    NbdCommand.Read => NbdReplyChunkType.OffsetData,
                    NbdCommand.BlockStatus => NbdReplyChunkType.BlockStatus,
                    _ => NbdReplyChunkType.Error,
                };
                var span = reply.GetSpan(NbdSizes.StructuredReplyHeader + 8);
                NbdTransmissionCodec.WriteStructuredHeader(span, NbdReplyFlags.Done, type, cookie, ClaimedHugeLength);
                var size = NbdSizes.StructuredReplyHeader;
                if (type == NbdReplyChunkType.OffsetData)
                {
                    NbdTransmissionCodec.WriteOffsetDataOffset(span[size..], start);
                    size += 8;
                }

                // The claimed payload never follows.
                reply.Advance(size);
                break;
            }

            case NbdReplyFault.DataOutsideRequest:
                await AppendDataAsync(reply, export, request, end, 0, NbdReplyFlags.Done, cancellationToken);
                break;
            case NbdReplyFault.HoleOutsideRequest:
            {
                var span = reply.GetSpan(NbdSizes.StructuredReplyHeader + 12);
                NbdTransmissionCodec.WriteStructuredHeader(span, NbdReplyFlags.Done, NbdReplyChunkType.OffsetHole, cookie, 12);
                NbdTransmissionCodec.WriteOffsetHole(span[NbdSizes.StructuredReplyHeader..], end, Math.Max(request.Length, 1));
                reply.Advance(NbdSizes.StructuredReplyHeader + 12);
                break;
            }

            case NbdReplyFault.OverlappingContent:
                await AppendDataAsync(reply, export, request, start, half + 1, NbdReplyFlags.None, cancellationToken);
                await AppendDataAsync(reply, export, request, start + half, request.Length - half, NbdReplyFlags.Done, cancellationToken);
                break;
            case NbdReplyFault.DuplicateContentWithGap:
                await AppendDataAsync(reply, export, request, start, half, NbdReplyFlags.None, cancellationToken);
                await AppendDataAsync(reply, export, request, start, half, NbdReplyFlags.Done, cancellationToken);
                break;
            case NbdReplyFault.DoneWithBytesMissing:
                await AppendDataAsync(reply, export, request, start, half, NbdReplyFlags.None, cancellationToken);
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.None, cookie, default);
                break;
            case NbdReplyFault.NoDone:
                await AppendDataAsync(reply, export, request, start, request.Length, NbdReplyFlags.None, cancellationToken);
                break;
            case NbdReplyFault.ErrorZeroCode:
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.Error, cookie, NbdTransmissionCodec.BuildErrorChunk(NbdErrorCode.None, "an error without an error code", null));
                break;
            case NbdReplyFault.ErrorOversizedMessage:
            {
                var message = new byte[6 + 5000];
                BinaryPrimitives.WriteUInt32BigEndian(message, (uint)NbdErrorCode.IOError);
                BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(4), 5000);
                message.AsSpan(6).Fill((byte)'x');
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.Error, cookie, message);
                break;
            }

            case NbdReplyFault.ErrorOffsetOutsideRequest:
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.ErrorOffset, cookie, NbdTransmissionCodec.BuildErrorChunk(NbdErrorCode.IOError, "an error outside the request", end + 512));
                break;
            case NbdReplyFault.UnknownChunkType:
                WriteChunk(reply, NbdReplyFlags.Done, UnknownType, cookie, new byte[4]);
                break;
            case NbdReplyFault.UnknownErrorChunkType:
                WriteChunk(reply, NbdReplyFlags.Done, UnknownErrorType, cookie, NbdTransmissionCodec.BuildErrorChunk(NbdErrorCode.IOError, "an error of a type from the future", null));
                break;
            case NbdReplyFault.BlockStatusBadLength:
            {
                var bad = new byte[4 + 5];
                BinaryPrimitives.WriteUInt32BigEndian(bad, FirstContextId);
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.BlockStatus, cookie, bad);
                break;
            }

            case NbdReplyFault.BlockStatusTooManyExtents:
            {
                var first = (uint)Math.Max(1, half);
                var second = (uint)Math.Max(1, request.Length - first);
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.BlockStatus, cookie, NbdTransmissionCodec.BuildBlockStatus(FirstContextId, [new(first, 0), new(second, 0)]));
                break;
            }

            case NbdReplyFault.BlockStatusUnknownContext:
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.BlockStatus, cookie, NbdTransmissionCodec.BuildBlockStatus(0xDEAD, [new(Math.Max(request.Length, 1), 0)]));
                break;
            case NbdReplyFault.BlockStatusZeroLengthExtent:
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.BlockStatus, cookie, NbdTransmissionCodec.BuildBlockStatus(FirstContextId, [new(0, 0)]));
                break;
            case NbdReplyFault.BlockStatusPastExportEnd:
            {
                var past = (uint)Math.Min(uint.MaxValue, export.Size - Math.Min(start, export.Size) + 4096);
                WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.BlockStatus, cookie, NbdTransmissionCodec.BuildBlockStatus(FirstContextId, [new(past, 0)]));
                break;
            }

            default:
                return false;
        }

        await SendAsync(reply.WrittenMemory, cancellationToken);
        return true;
    }

    private uint FirstContextId => _contexts.Length > 0 ? _contexts[0].Id : 1;

    /// <summary>The rule's error: a READ gets the good bytes before the bad range first, then the error naming its offset.</summary>
    private async Task InjectErrorAsync(NbdExport export, NbdRequestFault fault, NbdRequestHeader request, CancellationToken cancellationToken)
    {
        ulong? at = fault.HasRange ? Math.Max(request.Offset, fault.RangeOffset) : null;
        var message = at is { } offset
            ? $"injected {NbdNames.Error(fault.Error)} at offset {offset}"
            : $"injected {NbdNames.Error(fault.Error)} for a request of {request.Length} bytes";
        if (!_structured || at is null || request.Command != NbdCommand.Read || at == request.Offset)
        {
            await SendErrorAsync(request, fault.Error, message, at, cancellationToken);
            return;
        }

        using var reply = new PooledBufferWriter(256);
        await AppendDataAsync(reply, export, request, request.Offset, at.Value - request.Offset, NbdReplyFlags.None, cancellationToken);
        WriteChunk(reply, NbdReplyFlags.Done, NbdReplyChunkType.ErrorOffset, request.Cookie, NbdTransmissionCodec.BuildErrorChunk(fault.Error, message, at));
        await SendAsync(reply.WrittenMemory, cancellationToken);
    }

    /// <summary>
    /// Appends an OFFSET_DATA chunk for [offset, +length) of the export; bytes outside the export (a chunk
    /// placed outside the request on purpose) are zeroes. A length of 0 means "some bytes": up to 4 KiB.
    /// </summary>
    private async Task AppendDataAsync(PooledBufferWriter reply, NbdExport export, NbdRequestHeader request, ulong offset, ulong length, NbdReplyFlags flags, CancellationToken cancellationToken)
    {
        if (length == 0)
        {
            length = Math.Clamp(request.Length, 1, 4096);
        }

        var count = (int)length;
        var memory = reply.GetMemory(NbdSizes.StructuredReplyHeader + 8 + count);
        NbdTransmissionCodec.WriteStructuredHeader(memory.Span, flags, NbdReplyChunkType.OffsetData, request.Cookie, 8 + (uint)count);
        NbdTransmissionCodec.WriteOffsetDataOffset(memory.Span[NbdSizes.StructuredReplyHeader..], offset);
        var data = memory.Slice(NbdSizes.StructuredReplyHeader + 8, count);
        data.Span.Clear();
        if (offset < export.Size)
        {
            var inside = (int)Math.Min((ulong)count, export.Size - offset);
            await export.Backend.ReadAsync(offset, data[..inside], cancellationToken);
        }

        reply.Advance(NbdSizes.StructuredReplyHeader + 8 + count);
    }

    private async Task ReadDataAsync(NbdExport export, NbdRequestHeader request, Memory<byte> destination, CancellationToken cancellationToken)
    {
        destination.Span.Clear();
        if (request.Offset < export.Size)
        {
            var inside = (int)Math.Min((ulong)destination.Length, export.Size - request.Offset);
            await export.Backend.ReadAsync(request.Offset, destination[..inside], cancellationToken);
        }
    }

    /// <summary>
    /// Sends bytes, then ends the connection's sending side so the client sees EOF right after them. Over a
    /// socket only the send direction is shut (closing outright with requests unread could turn into a reset
    /// that overtakes the data); the connection closes when the client hangs up.
    /// </summary>
    private async Task SendThenCloseAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            await _stream.WriteAsync(bytes, cancellationToken);
            await _stream.FlushAsync(cancellationToken);
            if (_stream is NetworkStream network)
            {
                network.Socket.Shutdown(SocketShutdown.Send);
                return;
            }
        }
        finally
        {
            _writeLock.Release();
        }

        Abort();
    }
}
