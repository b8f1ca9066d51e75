using System.Buffers;
using System.Globalization;
using System.Runtime.ExceptionServices;
using Drydock.Hypervisor;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Repository;
using Drydock.Repository.Format;
using Drydock.Repository.Write;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Transfer.Backup;

/// <summary>Settings of the backup pipeline.</summary>
public sealed class BackupPipelineOptions
{
    /// <summary>NBD connections per disk (used when the export allows multi-conn). Default 4.</summary>
    public int Connections { get; set; } = 4;

    /// <summary>Chunks being read at once per disk. Default 16.</summary>
    public int ReadsInFlight { get; set; } = 16;

    /// <summary>How often a dropped connection is re-opened before the disk fails (F23). Default 3.</summary>
    public int ReconnectAttempts { get; set; } = 3;

    /// <summary>Timeout of one NBD request. Default 60 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Incremental and differential backups: a chunk whose changed data is at most this fraction of the chunk is rebuilt
    /// from the parent point's copy (fetched from the repository and checked) with only its changed ranges read over NBD,
    /// instead of re-reading its unchanged rest from the source. Lowers the load on the source (its storage and the NBD
    /// link) at the price of reading the parent's chunk from the repository. 0 turns it off; 1 patches every partly
    /// changed chunk. Default 0.5.
    /// </summary>
    public double PatchChangedBelow { get; set; } = 0.5;

    /// <summary>How often progress is reported at most. Default 250 ms.</summary>
    public TimeSpan ProgressInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>What one disk's backup read and stored.</summary>
public sealed record DiskBackupResult
{
    /// <summary>The disk.</summary>
    public required string Disk { get; init; }

    /// <summary>Chunks read over NBD and submitted.</summary>
    public required long ChunksRead { get; init; }

    /// <summary>Chunks recorded as zero without reading (holes, zero extents, trimmed ranges).</summary>
    public required long ChunksZero { get; init; }

    /// <summary>Chunks left to the parent's index (unchanged).</summary>
    public required long ChunksInherited { get; init; }

    /// <summary>Bytes read over NBD.</summary>
    public required long BytesRead { get; init; }

    /// <summary>Chunks of <see cref="ChunksRead"/> rebuilt from the parent's copy with only their changed ranges read.</summary>
    public long ChunksPatched { get; init; }

    /// <summary>Data extents planned (runs of chunks read).</summary>
    public required long Extents { get; init; }

    /// <summary>Connections re-opened after a drop.</summary>
    public int Reconnects { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>
/// Reads one captured disk over NBD into a repository disk writer: plans from block status (allocated for a full; dirty ∩
/// allocated for an incremental or differential; dirty-but-unallocated stored as zero, F19), reads chunk-aligned ranges
/// pipelined over one or more connections into pooled buffers, and hands them to the writer (which hashes, compresses,
/// encrypts and uploads on all cores with bounded memory).
/// </summary>
public sealed partial class BackupPipeline
{
    private readonly BackupPipelineOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    /// <summary>Creates the pipeline.</summary>
    /// <param name="options">Settings; defaults when null.</param>
    /// <param name="timeProvider">Clock for progress; system when null.</param>
    /// <param name="logger">Logger.</param>
    public BackupPipeline(BackupPipelineOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _options = options ?? new BackupPipelineOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.Connections, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.ReadsInFlight, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(_options.ReconnectAttempts, nameof(options));
        if (!(_options.PatchChangedBelow is >= 0 and <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(options), _options.PatchChangedBelow, "PatchChangedBelow must be between 0 and 1");
        }

        _time = timeProvider ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Backs up one disk.</summary>
    /// <param name="source">The captured disk (endpoint, changed-blocks context when incremental).</param>
    /// <param name="writer">The repository's writer for the disk; its level says full or changed-only.</param>
    /// <param name="progress">Progress sink.</param>
    /// <param name="cancellationToken">Cancels the transfer.</param>
    /// <returns>What was read.</returns>
    /// <exception cref="SourceReadException">A range could not be read (names the offset).</exception>
    public async Task<DiskBackupResult> RunAsync(CaptureDisk source, DiskWriter writer, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(writer);
        var disk = source.Target;
        var reporter = new ProgressReporter(disk, progress, _time, _options.ProgressInterval);
        reporter.Enter(TransferPhase.Planning);
        if ((ulong)writer.Request.VirtualSize != source.VirtualSize)
        {
            throw new TransferRequestException(Invariant($"Disk {disk}: the capture is {source.VirtualSize} bytes but the repository writer expects {writer.Request.VirtualSize}")) { Disk = disk };
        }

        // A full reads every chunk; so does a changed-only level when the capture has no changed-block context.
        var dirtyContext = writer.Request.Level != DiskBackupLevel.Full ? source.ChangedBlocksContext : null;
        var clientOptions = new NbdClientOptions
        {
            Connections = _options.Connections,
            RequestTimeout = _options.RequestTimeout,
            ExpectedSize = source.VirtualSize,
            TimeProvider = _time,
        };
        clientOptions.MetaContexts.Add(NbdContexts.BaseAllocation);
        if (dirtyContext is not null)
        {
            clientOptions.MetaContexts.Add(dirtyContext);
        }

        ReconnectingClient connection;
        try
        {
            connection = await ReconnectingClient.OpenAsync(
                ct => NbdClient.ConnectAsync(source.Endpoint, clientOptions, ct),
                _options.ReconnectAttempts,
                _time,
                (attempt, cause) => LogReconnecting(_logger, disk, attempt, _options.ReconnectAttempts, cause.Message),
                cancellationToken);
        }
        catch (NbdException e)
        {
            throw new SourceReadException($"Disk {disk}: cannot open the NBD export {source.Endpoint}: {e.Message}", e) { Disk = disk };
        }

        await using (connection)
        {
            var client = connection.Current.Client;
            if (dirtyContext is not null && !client.HasContext(dirtyContext))
            {
                // Never "nothing changed": without the map of changes this disk cannot be an incremental.
                throw new SourceReadException($"Disk {disk}: the NBD server did not negotiate the changed-block context '{dirtyContext}'; the disk needs a full backup") { Disk = disk };
            }

            var plan = await PlanAsync(connection, disk, writer, dirtyContext, cancellationToken);
            foreach (var chunk in plan.ZeroChunks)
            {
                writer.MarkZero(chunk);
            }

            reporter.TotalBytes = plan.BytesToRead;
            reporter.TotalExtents = plan.Runs;
            reporter.Enter(TransferPhase.Transferring);
            var bytesRead = await ReadAllAsync(connection, disk, writer, plan, reporter, cancellationToken);
            reporter.Enter(TransferPhase.Done);
            var result = new DiskBackupResult
            {
                Disk = disk,
                ChunksRead = plan.Reads.Count,
                ChunksZero = plan.ZeroChunks.Count,
                ChunksInherited = plan.InheritedChunks,
                ChunksPatched = plan.PatchedChunks,
                BytesRead = bytesRead,
                Extents = plan.Runs,
                Reconnects = connection.Reconnects,
                Elapsed = reporter.Elapsed,
            };
            LogDone(_logger, disk, result.ChunksRead, result.ChunksPatched, result.ChunksZero, result.ChunksInherited, result.BytesRead, result.Reconnects);
            return result;
        }
    }

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private async Task<ReadPlan> PlanAsync(ReconnectingClient connection, string disk, DiskWriter writer, string? dirtyContext, CancellationToken cancellationToken)
    {
        var size = writer.Request.VirtualSize;
        var maps = await WithReconnectAsync(
            connection,
            disk,
            0,
            async (client, ct) =>
            {
                var contexts = new List<string>();
                if (client.HasContext(NbdContexts.BaseAllocation))
                {
                    contexts.Add(NbdContexts.BaseAllocation);
                }

                if (dirtyContext is not null)
                {
                    contexts.Add(dirtyContext);
                }

                return contexts.Count == 0 || size == 0
                    ? new Dictionary<string, IReadOnlyList<NbdExtent>>()
                    : await client.MapAsync(contexts, cancellationToken: ct);
            },
            cancellationToken);

        // Without base:allocation everything is data: read it all.
        var allocation = maps.TryGetValue(NbdContexts.BaseAllocation, out var a) ? a : [new NbdExtent(0, (ulong)size, 0)];
        var dirty = dirtyContext is null ? null : maps.TryGetValue(dirtyContext, out var d) ? d : [];
        var refresh = writer.Request.Level == DiskBackupLevel.Full ? [] : writer.RefreshRequired;
        return ReadPlanner.Plan(size, writer.ChunkSize, allocation, dirty, refresh, writer.HasParentChunk, _options.PatchChangedBelow);
    }

    private async Task<long> ReadAllAsync(ReconnectingClient connection, string disk, DiskWriter writer, ReadPlan plan, ProgressReporter reporter, CancellationToken cancellationToken)
    {
        var reads = plan.Reads;
        if (reads.Count == 0)
        {
            return 0;
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Exception? firstError = null;
        long next = -1;
        long bytesRead = 0;
        var minimum = connection.Current.Client.Export.BlockSizes.Minimum;

        async Task ReadLoopAsync()
        {
            byte[]? buffer = null;
            try
            {
                while (true)
                {
                    var k = Interlocked.Increment(ref next);
                    if (k >= reads.Count)
                    {
                        return;
                    }

                    stop.Token.ThrowIfCancellationRequested();
                    var chunk = reads[(int)k];
                    buffer ??= ArrayPool<byte>.Shared.Rent(writer.ChunkSize);
                    var data = buffer.AsMemory(0, chunk.Length);
                    var bytes = chunk.Patch is { } patch && Aligned(patch.Reads, minimum) && await TryReadParentAsync(writer, disk, chunk, data, stop.Token)
                        ? await WithReconnectAsync(connection, disk, chunk.Offset, (client, ct) => PatchChunkAsync(client, chunk, patch, data, ct), stop.Token)
                        : await WithReconnectAsync(connection, disk, chunk.Offset, (client, ct) => ReadChunkAsync(client, chunk, data, minimum, ct), stop.Token);

                    // The buffer goes to the writer as it is (no 2 MiB copy); the next chunk gets a fresh one from the pool.
                    var owned = buffer;
                    buffer = null;
                    await writer.WriteRentedChunkAsync(chunk.Index, owned, chunk.Length, stop.Token);
                    Interlocked.Add(ref bytesRead, bytes);
                    var endsRun = k == reads.Count - 1 || reads[(int)k + 1].Index != chunk.Index + 1;
                    reporter.Add(bytes, endsRun ? 1 : 0);
                }
            }
            catch (Exception e)
            {
                if (e is not OperationCanceledException || !stop.IsCancellationRequested)
                {
                    Interlocked.CompareExchange(ref firstError, e, null);
                }

                await stop.CancelAsync();
                throw;
            }
            finally
            {
                if (buffer is not null)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
        }

        var readers = new Task[(int)Math.Min(_options.ReadsInFlight, reads.Count)];
        for (var i = 0; i < readers.Length; i++)
        {
            readers[i] = ReadLoopAsync();
        }

        try
        {
            await Task.WhenAll(readers);
        }
        catch when (firstError is not null && !cancellationToken.IsCancellationRequested)
        {
            ExceptionDispatchInfo.Throw(firstError);
        }

        return bytesRead;
    }

    // Reads a chunk into a buffer of its length: whole, or only its data pieces into a zeroed buffer.
    private static async Task<long> ReadChunkAsync(NbdClient client, ChunkRead chunk, Memory<byte> data, uint minimum, CancellationToken cancellationToken)
    {
        var pieces = chunk.Pieces;
        if (pieces is null || !Aligned(pieces, minimum))
        {
            await client.ReadAsync((ulong)chunk.Offset, data, cancellationToken);
            return chunk.Length;
        }

        data.Span.Clear();
        return await ReadPiecesAsync(client, chunk.Offset, pieces, data, cancellationToken);
    }

    // Rebuilds a chunk over the parent's bytes already in the buffer: zeroes the changed ranges, reads their data pieces.
    // Idempotent, so a retry after a reconnect starts from the same state.
    private static Task<long> PatchChunkAsync(NbdClient client, ChunkRead chunk, ChunkPatch patch, Memory<byte> data, CancellationToken cancellationToken)
    {
        foreach (var changed in patch.Changed)
        {
            data.Span.Slice((int)(changed.Offset - chunk.Offset), changed.Length).Clear();
        }

        return ReadPiecesAsync(client, chunk.Offset, patch.Reads, data, cancellationToken);
    }

    private static async Task<long> ReadPiecesAsync(NbdClient client, long chunkOffset, IReadOnlyList<ReadPiece> pieces, Memory<byte> data, CancellationToken cancellationToken)
    {
        switch (pieces.Count)
        {
            case 0:
                return 0;
            case 1:
                var p = pieces[0];
                await client.ReadAsync((ulong)p.Offset, data.Slice((int)(p.Offset - chunkOffset), p.Length), cancellationToken);
                return p.Length;
            default:
                await Task.WhenAll(pieces.Select(piece => client.ReadAsync((ulong)piece.Offset, data.Slice((int)(piece.Offset - chunkOffset), piece.Length), cancellationToken)));
                return pieces.Sum(piece => (long)piece.Length);
        }
    }

    private static bool Aligned(IReadOnlyList<ReadPiece> pieces, uint minimum)
        => minimum <= 1 || pieces.All(p => p.Offset % minimum == 0 && p.Length % minimum == 0);

    // Fetches the parent's copy of a chunk into the buffer. A parent copy that turns out missing or damaged is not fatal:
    // the chunk is read whole from the source instead (the source holds the truth; verify reports the damage).
    private async Task<bool> TryReadParentAsync(DiskWriter writer, string disk, ChunkRead chunk, Memory<byte> data, CancellationToken cancellationToken)
    {
        try
        {
            await writer.ReadParentChunkAsync(chunk.Index, data, cancellationToken);
            return true;
        }
        catch (RepositoryException e) when (!cancellationToken.IsCancellationRequested)
        {
            LogParentUnreadable(_logger, disk, chunk.Offset, e.Message);
            return false;
        }
    }

    // Runs one NBD operation; a dead connection is re-opened and the operation retried (F23); a server error on the
    // request fails the disk naming the offset, never retried and never zero-filled (F26).
    private static async Task<T> WithReconnectAsync<T>(ReconnectingClient connection, string disk, long offset, Func<NbdClient, CancellationToken, Task<T>> operation, CancellationToken cancellationToken)
    {
        try
        {
            return await connection.RunAsync(operation, cancellationToken);
        }
        catch (NbdRequestException e)
        {
            var at = e.ErrorOffset is { } exact ? (long)exact : (long)e.Offset;
            throw new SourceReadException(Invariant($"Disk {disk}: reading the source failed at offset {at} (chunk at {offset}): {e.Message}"), e) { Disk = disk, Offset = at };
        }
        catch (ConnectionLostException e)
        {
            throw new SourceReadException(Invariant($"Disk {disk}: the NBD connection failed at offset {offset} and {e.Message}"), e.InnerException) { Disk = disk, Offset = offset };
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Disk {Disk}: NBD connection lost, reconnecting (attempt {Attempt} of {MaxAttempts}): {Reason}")]
    private static partial void LogReconnecting(ILogger logger, string disk, int attempt, int maxAttempts, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Disk {Disk}: the parent's copy of the chunk at {Offset} cannot be read ({Reason}); reading the whole chunk from the source")]
    private static partial void LogParentUnreadable(ILogger logger, string disk, long offset, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Disk {Disk}: backed up, {ChunksRead} chunks read ({ChunksPatched} patched from the parent), {ChunksZero} zero, {ChunksInherited} inherited, {BytesRead} bytes, {Reconnects} reconnects")]
    private static partial void LogDone(ILogger logger, string disk, long chunksRead, long chunksPatched, long chunksZero, long chunksInherited, long bytesRead, int reconnects);
}
