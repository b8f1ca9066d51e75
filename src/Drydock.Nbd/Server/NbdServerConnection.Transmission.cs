using System.Buffers;
using Drydock.Nbd.Protocol;

namespace Drydock.Nbd.Server;

/// <summary>The transmission phase of a connection.</summary>
internal sealed partial class NbdServerConnection
{
    private const int DiscardChunk = 64 * 1024;

    /// <summary>Reads requests and starts each one; returns why the connection ends.</summary>
    private async Task<string> TransmitAsync(NbdExport export)
    {
        var cancellationToken = _abort.Token;
        var header = new byte[NbdSizes.RequestHeader];
        while (true)
        {
            if (!await ReadRequestHeaderAsync(header, cancellationToken))
            {
                return "the client closed the connection without NBD_CMD_DISC";
            }

            NbdTransmissionCodec.TryReadRequest(header, out var request);
            if (request.Command == NbdCommand.Disconnect)
            {
                // Every request in flight is answered before the connection closes.
                await WaitForRequestsAsync();
                return "the client disconnected (NBD_CMD_DISC)";
            }

            byte[]? payload = null;
            long charge = 0;
            if (request.Command == NbdCommand.Write)
            {
                if (request.Length > (uint)_options.MaxWritePayload)
                {
                    throw new NbdProtocolException($"WRITE of {request.Length} bytes is over the cap of {_options.MaxWritePayload}; a client that sends it is hung up on");
                }

                if (request.Length > export.BlockSizes.Maximum)
                {
                    // Answered with EINVAL by validation; the payload is read and dropped to stay in sync.
                    await DiscardAsync(request.Length, cancellationToken);
                }
                else if (request.Length > 0)
                {
                    charge = request.Length;
                    await _budget.WaitAsync(charge, cancellationToken);
                    payload = ArrayPool<byte>.Shared.Rent((int)request.Length);
                    try
                    {
                        await _stream.ReadExactlyAsync(payload.AsMemory(0, (int)request.Length), cancellationToken);
                    }
                    catch
                    {
                        ArrayPool<byte>.Shared.Return(payload);
                        _budget.Release(charge);
                        throw;
                    }
                }
            }
            else if (request.Command == NbdCommand.Read && request.Length <= export.BlockSizes.Maximum)
            {
                charge = request.Length;
                await _budget.WaitAsync(charge, cancellationToken);
            }

            try
            {
                await _slots.WaitAsync(cancellationToken);
            }
            catch
            {
                Release(payload, charge);
                throw;
            }

            _ = ProcessAsync(export, request, payload, charge);
        }
    }

    /// <summary>Waits until no request is running (takes every slot, then gives them back).</summary>
    private async Task WaitForRequestsAsync()
    {
        for (var i = 0; i < _options.MaxRequestsInFlight; i++)
        {
            await _slots.WaitAsync(CancellationToken.None);
        }

        _slots.Release(_options.MaxRequestsInFlight);
    }

    // False on a clean EOF before the first byte of a header.
    private async Task<bool> ReadRequestHeaderAsync(byte[] header, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < header.Length)
        {
            var read = await _stream.ReadAsync(header.AsMemory(filled), cancellationToken);
            if (read == 0)
            {
                if (filled == 0)
                {
                    return false;
                }

                throw new NbdProtocolException($"client closed the connection {filled} bytes into a request header");
            }

            filled += read;
        }

        return true;
    }

    private async Task DiscardAsync(uint length, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(DiscardChunk);
        try
        {
            for (var left = (int)length; left > 0;)
            {
                var count = Math.Min(left, DiscardChunk);
                await _stream.ReadExactlyAsync(buffer.AsMemory(0, count), cancellationToken);
                left -= count;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Release(byte[]? payload, long charge)
    {
        if (payload is not null)
        {
            ArrayPool<byte>.Shared.Return(payload);
        }

        if (charge > 0)
        {
            _budget.Release(charge);
        }
    }

    /// <summary>Runs one request to its reply. Never throws: a failure to answer closes the connection.</summary>
    private async Task ProcessAsync(NbdExport export, NbdRequestHeader request, byte[]? payload, long charge)
    {
        var cancellationToken = _abort.Token;
        try
        {
            var data = payload is null ? ReadOnlyMemory<byte>.Empty : payload.AsMemory(0, (int)request.Length);
            if (_faults?.Consult(request) is { } fault)
            {
                LogRequestFault(_logger, Id, fault.Fault, request.Command, request.Offset, request.Length);
                if (await InjectAsync(export, fault, request, data, cancellationToken))
                {
                    return;
                }
            }

            await ExecuteAsync(export, request, data, cancellationToken);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException)
        {
            // The connection is going away (or the peer stopped reading); nothing more to say to it.
            Abort();
        }
        catch (Exception e)
        {
            LogRequestFailed(_logger, Id, NbdNames.Command(request.Command), request.Offset, e);
            Abort();
        }
        finally
        {
            Release(payload, charge);
            _slots.Release();
        }
    }

    private async Task ExecuteAsync(NbdExport export, NbdRequestHeader request, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        var (error, message) = Validate(export, request);
        if (error != NbdErrorCode.None)
        {
            await SendErrorAsync(request, error, message, null, cancellationToken);
            return;
        }

        switch (request.Command)
        {
            case NbdCommand.Read:
                await ReadAsync(export, request, cancellationToken);
                return;
            case NbdCommand.BlockStatus:
                await BlockStatusAsync(export, request, cancellationToken);
                return;
            default:
                break;
        }

        var fua = (request.Flags & NbdCommandFlags.Fua) != 0;
        var noHole = (request.Flags & NbdCommandFlags.NoHole) != 0;
        try
        {
            switch (request.Command)
            {
                case NbdCommand.Write:
                    await export.WriteAsync(request.Offset, payload, fua, cancellationToken);
                    break;
                case NbdCommand.WriteZeroes:
                    if ((request.Flags & NbdCommandFlags.FastZero) != 0 && !export.Backend.CanZeroFast(noHole))
                    {
                        (error, message) = (NbdErrorCode.NotSupported, "zeroing is not faster than writing on this export");
                        break;
                    }

                    await export.WriteZeroesAsync(request.Offset, request.Length, noHole, fua, cancellationToken);
                    break;
                case NbdCommand.Trim:
                    await export.TrimAsync(request.Offset, request.Length, fua, cancellationToken);
                    break;
                case NbdCommand.Flush:
                    await export.FlushAsync(cancellationToken);
                    break;
                case NbdCommand.Cache:
                    await export.Backend.CacheAsync(request.Offset, request.Length, cancellationToken);
                    break;
                default:
                    break;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            (error, message) = BackendFailure(request, e);
        }

        if (error != NbdErrorCode.None)
        {
            await SendErrorAsync(request, error, message, null, cancellationToken);
        }
        else
        {
            await SendSimpleAsync(request.Cookie, NbdErrorCode.None, cancellationToken);
        }
    }

    /// <summary>The specification's checks on a request, in order: flags, permission, range, alignment, size.</summary>
    private (NbdErrorCode Error, string Message) Validate(NbdExport export, in NbdRequestHeader request)
    {
        var command = NbdNames.Command(request.Command);
        var allowed = NbdCommandFlags.Fua | request.Command switch
        {
            NbdCommand.WriteZeroes => NbdCommandFlags.NoHole | NbdCommandFlags.FastZero,
            NbdCommand.BlockStatus => NbdCommandFlags.RequestOne,
            _ => NbdCommandFlags.None,
        };
        if (request.Command is not (NbdCommand.Read or NbdCommand.Write or NbdCommand.Flush or NbdCommand.Trim or NbdCommand.Cache or NbdCommand.WriteZeroes or NbdCommand.BlockStatus))
        {
            return (NbdErrorCode.InvalidArgument, $"{command} is not supported");
        }

        if ((request.Flags & ~allowed) != 0)
        {
            return (NbdErrorCode.InvalidArgument, $"flags 0x{(ushort)request.Flags:x4} are not valid for {command}");
        }

        var writes = request.Command is NbdCommand.Write or NbdCommand.WriteZeroes or NbdCommand.Trim;
        if (writes && export.IsReadOnly)
        {
            return (NbdErrorCode.PermissionDenied, $"export '{export.Name}' is read-only");
        }

        if (request.Command == NbdCommand.Flush)
        {
            return (NbdErrorCode.None, string.Empty);
        }

        if (request.Offset > export.Size || request.Length > export.Size - request.Offset)
        {
            // The specification asks for ENOSPC on writes past the end and EINVAL on everything else.
            var error = request.Command is NbdCommand.Write or NbdCommand.WriteZeroes ? NbdErrorCode.NoSpace : NbdErrorCode.InvalidArgument;
            return (error, $"{command} [{request.Offset}, +{request.Length}) passes the export end {export.Size}");
        }

        var minimum = export.BlockSizes.Minimum;
        if (minimum > 1 && (request.Offset % minimum != 0 || request.Length % minimum != 0))
        {
            return (NbdErrorCode.InvalidArgument, $"{command} [{request.Offset}, +{request.Length}) is not aligned to the minimum block size {minimum}");
        }

        var limited = request.Command is NbdCommand.Read or NbdCommand.Write or NbdCommand.Cache
                      || (request.Command == NbdCommand.WriteZeroes && (request.Flags & NbdCommandFlags.FastZero) == 0);
        if (limited && request.Length > export.BlockSizes.Maximum)
        {
            return (NbdErrorCode.InvalidArgument, $"{command} of {request.Length} bytes is over the maximum block size {export.BlockSizes.Maximum}");
        }

        if (request.Command == NbdCommand.BlockStatus)
        {
            if (_contexts.Length == 0)
            {
                return (NbdErrorCode.InvalidArgument, "BLOCK_STATUS needs a metadata context selected with NBD_OPT_SET_META_CONTEXT");
            }

            if (request.Length == 0)
            {
                return (NbdErrorCode.InvalidArgument, "BLOCK_STATUS of zero bytes");
            }
        }

        return (NbdErrorCode.None, string.Empty);
    }

    private async Task ReadAsync(NbdExport export, NbdRequestHeader request, CancellationToken cancellationToken)
    {
        var length = (int)request.Length;
        if (!_structured)
        {
            using var simple = new PooledBufferWriter(NbdSizes.SimpleReplyHeader + length);
            var memory = simple.GetMemory(NbdSizes.SimpleReplyHeader + length);
            try
            {
                await export.Backend.ReadAsync(request.Offset, memory.Slice(NbdSizes.SimpleReplyHeader, length), cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                var (error, message) = BackendFailure(request, e);
                await SendErrorAsync(request, error, message, null, cancellationToken);
                return;
            }

            NbdTransmissionCodec.WriteSimpleReply(memory.Span, request.Cookie, NbdErrorCode.None);
            simple.Advance(NbdSizes.SimpleReplyHeader + length);
            await SendAsync(simple.WrittenMemory, cancellationToken);
            return;
        }

        if (length == 0)
        {
            await SendNoneAsync(request.Cookie, cancellationToken);
            return;
        }

        // Holes go out as OFFSET_HOLE, data as OFFSET_DATA read straight into the reply; the last chunk is DONE.
        using var reply = new PooledBufferWriter(length + 1024);
        try
        {
            var extents = await export.Backend.GetAllocationAsync(request.Offset, request.Length, int.MaxValue, cancellationToken);
            var end = request.Offset + request.Length;
            var at = request.Offset;
            for (var i = 0; at < end; i++)
            {
                // Whatever the backend did not describe (or described wrongly) goes out as data.
                var extent = i < extents.Count && extents[i].Offset == at && extents[i].End > at ? extents[i] : new NbdExtent(at, end - at, 0);
                var count = (uint)(Math.Min(extent.End, end) - at);
                var flags = at + count == end ? NbdReplyFlags.Done : NbdReplyFlags.None;
                if (extent.IsHole && extent.IsZero)
                {
                    var span = reply.GetSpan(NbdSizes.StructuredReplyHeader + 12);
                    NbdTransmissionCodec.WriteStructuredHeader(span, flags, NbdReplyChunkType.OffsetHole, request.Cookie, 12);
                    NbdTransmissionCodec.WriteOffsetHole(span[NbdSizes.StructuredReplyHeader..], at, count);
                    reply.Advance(NbdSizes.StructuredReplyHeader + 12);
                }
                else
                {
                    var size = NbdSizes.StructuredReplyHeader + 8 + (int)count;
                    var memory = reply.GetMemory(size);
                    NbdTransmissionCodec.WriteStructuredHeader(memory.Span, flags, NbdReplyChunkType.OffsetData, request.Cookie, 8 + count);
                    NbdTransmissionCodec.WriteOffsetDataOffset(memory.Span[NbdSizes.StructuredReplyHeader..], at);
                    await export.Backend.ReadAsync(at, memory.Slice(NbdSizes.StructuredReplyHeader + 8, (int)count), cancellationToken);
                    reply.Advance(size);
                }

                at += count;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // Nothing was sent yet, so the whole reply becomes one error chunk.
            var (error, message) = BackendFailure(request, e);
            await SendErrorAsync(request, error, message, null, cancellationToken);
            return;
        }

        await SendAsync(reply.WrittenMemory, cancellationToken);
    }

    private async Task BlockStatusAsync(NbdExport export, NbdRequestHeader request, CancellationToken cancellationToken)
    {
        var requestOne = (request.Flags & NbdCommandFlags.RequestOne) != 0;
        var maxExtents = requestOne ? 1 : _options.MaxBlockStatusExtents;
        var contexts = _contexts;
        using var reply = new PooledBufferWriter(256);
        try
        {
            for (var i = 0; i < contexts.Length; i++)
            {
                var context = contexts[i];
                var extents = context.Bitmap is { } bitmap
                    ? bitmap.GetExtents(request.Offset, request.Length, maxExtents)
                    : await AllocationAsync(export, request, maxExtents, cancellationToken);
                var descriptors = new NbdBlockDescriptor[extents.Count];
                for (var j = 0; j < descriptors.Length; j++)
                {
                    // Extents lie inside the request, whose length fits 32 bits.
                    descriptors[j] = new NbdBlockDescriptor((uint)extents[j].Length, extents[j].Flags);
                }

                var flags = i == contexts.Length - 1 ? NbdReplyFlags.Done : NbdReplyFlags.None;
                WriteChunk(reply, flags, NbdReplyChunkType.BlockStatus, request.Cookie, NbdTransmissionCodec.BuildBlockStatus(context.Id, descriptors));
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            var (error, message) = BackendFailure(request, e);
            await SendErrorAsync(request, error, message, null, cancellationToken);
            return;
        }

        await SendAsync(reply.WrittenMemory, cancellationToken);
    }

    /// <summary>
    /// base:allocation for a BLOCK_STATUS request, in extents whose lengths are multiples of the export's minimum
    /// block size, as the specification requires, whatever granularity the backend reports in.
    /// </summary>
    private static async Task<IReadOnlyList<NbdExtent>> AllocationAsync(NbdExport export, NbdRequestHeader request, int maxExtents, CancellationToken cancellationToken)
    {
        var unit = export.BlockSizes.Minimum;
        if (unit == 1)
        {
            return await export.Backend.GetAllocationAsync(request.Offset, request.Length, maxExtents, cancellationToken);
        }

        var extents = await export.Backend.GetAllocationAsync(request.Offset, request.Length, Math.Max(maxExtents, 64), cancellationToken);
        var aligned = AlignExtents(extents, unit);
        if (aligned.Count > maxExtents)
        {
            aligned.RemoveRange(maxExtents, aligned.Count - maxExtents);
        }

        // The backend stopped inside a block: drop the partial block, or claim it as data (0 is always safe).
        var last = aligned[^1];
        if (last.End % unit != 0)
        {
            if (aligned.Count > 1)
            {
                aligned.RemoveAt(aligned.Count - 1);
            }
            else
            {
                aligned[0] = new NbdExtent(last.Offset, last.End - (last.End % unit) + unit - last.Offset, 0);
            }
        }

        return aligned;
    }

    /// <summary>
    /// Moves extent boundaries to multiples of <paramref name="unit"/> (the first extent starts on one): a block
    /// that mixes states gets only the flags all its parts share (a hole is a hole only if all of it is).
    /// </summary>
    internal static List<NbdExtent> AlignExtents(IReadOnlyList<NbdExtent> extents, uint unit)
    {
        var aligned = new List<NbdExtent>(extents.Count);
        foreach (var extent in extents)
        {
            var at = extent.Offset;
            if (aligned.Count > 0 && aligned[^1].End % unit != 0)
            {
                // Finish the block the previous extent left open.
                var open = aligned[^1];
                var blockStart = open.End - (open.End % unit);
                var blockEnd = Math.Min(blockStart + unit, extent.End);
                var shared = open.Flags & extent.Flags;
                if (blockStart > open.Offset)
                {
                    aligned[^1] = open with { Length = blockStart - open.Offset };
                    Append(aligned, blockStart, blockEnd - blockStart, shared);
                }
                else
                {
                    aligned[^1] = open with { Length = blockEnd - open.Offset, Flags = shared };
                }

                at = blockEnd;
            }

            if (at < extent.End)
            {
                Append(aligned, at, extent.End - at, extent.Flags);
            }
        }

        return aligned;
    }

    private static void Append(List<NbdExtent> extents, ulong offset, ulong length, uint flags)
    {
        if (extents.Count > 0 && extents[^1].Flags == flags && extents[^1].End == offset)
        {
            extents[^1] = extents[^1] with { Length = extents[^1].Length + length };
        }
        else
        {
            extents.Add(new NbdExtent(offset, length, flags));
        }
    }

    private (NbdErrorCode Error, string Message) BackendFailure(in NbdRequestHeader request, Exception e)
    {
        LogBackendFailed(_logger, Id, NbdNames.Command(request.Command), request.Offset, e);
        var error = e switch
        {
            ArgumentException => NbdErrorCode.InvalidArgument,
            NotSupportedException => NbdErrorCode.NotSupported,
            UnauthorizedAccessException => NbdErrorCode.PermissionDenied,
            _ => NbdErrorCode.IOError,
        };
        return (error, e.Message);
    }

    // ---------------------------------------------------------------------------------- sending

    private async Task SendErrorAsync(NbdRequestHeader request, NbdErrorCode error, string message, ulong? errorOffset, CancellationToken cancellationToken)
    {
        if (!_structured)
        {
            await SendSimpleAsync(request.Cookie, error, cancellationToken);
            return;
        }

        using var reply = new PooledBufferWriter(256);
        var type = errorOffset is null ? NbdReplyChunkType.Error : NbdReplyChunkType.ErrorOffset;
        WriteChunk(reply, NbdReplyFlags.Done, type, request.Cookie, NbdTransmissionCodec.BuildErrorChunk(error, Truncate(message), errorOffset));
        await SendAsync(reply.WrittenMemory, cancellationToken);
    }

    private async Task SendSimpleAsync(ulong cookie, NbdErrorCode error, CancellationToken cancellationToken)
    {
        var bytes = ArrayPool<byte>.Shared.Rent(NbdSizes.SimpleReplyHeader);
        try
        {
            NbdTransmissionCodec.WriteSimpleReply(bytes, cookie, error);
            await SendAsync(bytes.AsMemory(0, NbdSizes.SimpleReplyHeader), cancellationToken);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    private async Task SendNoneAsync(ulong cookie, CancellationToken cancellationToken)
    {
        var bytes = ArrayPool<byte>.Shared.Rent(NbdSizes.StructuredReplyHeader);
        try
        {
            NbdTransmissionCodec.WriteStructuredHeader(bytes, NbdReplyFlags.Done, NbdReplyChunkType.None, cookie, 0);
            await SendAsync(bytes.AsMemory(0, NbdSizes.StructuredReplyHeader), cancellationToken);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    private static void WriteChunk(PooledBufferWriter writer, NbdReplyFlags flags, NbdReplyChunkType type, ulong cookie, ReadOnlySpan<byte> payload)
    {
        var span = writer.GetSpan(NbdSizes.StructuredReplyHeader + payload.Length);
        NbdTransmissionCodec.WriteStructuredHeader(span, flags, type, cookie, (uint)payload.Length);
        payload.CopyTo(span[NbdSizes.StructuredReplyHeader..]);
        writer.Advance(NbdSizes.StructuredReplyHeader + payload.Length);
    }

    /// <summary>Writes one whole reply; replies never interleave.</summary>
    private async Task SendAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            await _stream.WriteAsync(bytes, cancellationToken);
            await _stream.FlushAsync(cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }
}
