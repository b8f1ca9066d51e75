using System.Buffers;
using System.Globalization;
using System.Runtime.ExceptionServices;
using System.Security.Cryptography;
using Drydock.Nbd;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Drydock.Repository.Read;
using Drydock.Storage;
using Drydock.Transfer.Backup;
using Drydock.Transfer.Interop;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Drydock.Transfer.Restore;

/// <summary>How a restore treats the target's current content.</summary>
public enum RestoreWriteMode
{
    /// <summary>The target reads as zeros (a new image): zero chunks are skipped, it stays sparse.</summary>
    FreshTarget = 0,

    /// <summary>Every chunk is written; zero chunks with WRITE_ZEROES (the target stays sparse where it can).</summary>
    Overwrite = 1,

    /// <summary>Only chunks whose content differs from the point are written (the target is read and compared).</summary>
    ChangedOnly = 2,
}

/// <summary>A local image format.</summary>
public enum DiskImageFormat
{
    /// <summary>A sparse raw file.</summary>
    Raw = 0,

    /// <summary>A qcow2 image (version 3, 64 KiB clusters), written directly.</summary>
    Qcow2 = 1,
}

/// <summary>Settings of the restore pipeline.</summary>
public sealed class RestorePipelineOptions
{
    /// <summary>NBD connections to the target. Default 4.</summary>
    public int Connections { get; set; } = 4;

    /// <summary>Chunks fetched and written at once. Default 16.</summary>
    public int Parallelism { get; set; } = 16;

    /// <summary>Timeout of one NBD request. Default 60 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>How often a dropped connection to an NBD target is re-opened before the disk fails (F23); the chunks in
    /// flight are written again (a write of a chunk's fixed content is idempotent). Default 3.</summary>
    public int ReconnectAttempts { get; set; } = 3;

    /// <summary>How often progress is reported at most. Default 250 ms.</summary>
    public TimeSpan ProgressInterval { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>What one disk's restore did.</summary>
public sealed record DiskRestoreResult
{
    /// <summary>The disk.</summary>
    public required string Disk { get; init; }

    /// <summary>Chunks fetched from the repository and written.</summary>
    public required long ChunksWritten { get; init; }

    /// <summary>Chunks zeroed on the target (WRITE_ZEROES or a punched hole).</summary>
    public required long ChunksZeroed { get; init; }

    /// <summary>Chunks left alone: zero on a fresh target, or equal to the point's content (changed-only).</summary>
    public required long ChunksSkipped { get; init; }

    /// <summary>Bytes written to the target.</summary>
    public required long BytesWritten { get; init; }

    /// <summary>Bytes of the target read to compare (changed-only).</summary>
    public long BytesCompared { get; init; }

    /// <summary>Connections to an NBD target re-opened after a drop.</summary>
    public int Reconnects { get; init; }

    /// <summary>Wall time.</summary>
    public required TimeSpan Elapsed { get; init; }
}

/// <summary>
/// Restores one disk of a point: fetches chunks in parallel (each authenticated and re-hashed by the repository), and
/// writes them through NBD or to a local raw or qcow2 image. A local image appears under its final name only when it is
/// complete.
/// </summary>
public sealed partial class RestorePipeline
{
    // The unit in which a fresh target skips zeros inside a chunk: a qcow2 cluster (64 KiB by default), a multiple of
    // any file system block and of O_DIRECT's alignment.
    private const int SparseSegment = 64 * 1024;

    private readonly RestorePipelineOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;

    /// <summary>Creates the pipeline.</summary>
    /// <param name="options">Settings; defaults when null.</param>
    /// <param name="timeProvider">Clock for progress.</param>
    /// <param name="logger">Logger.</param>
    public RestorePipeline(RestorePipelineOptions? options = null, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        _options = options ?? new RestorePipelineOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.Connections, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.Parallelism, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(_options.ReconnectAttempts, nameof(options));
        _time = timeProvider ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Writes a point's disk through an NBD export (the export's size must equal the disk's).</summary>
    /// <param name="source">The point's disk.</param>
    /// <param name="target">A writable export.</param>
    /// <param name="mode">How to treat the target's current content.</param>
    /// <param name="progress">Progress sink.</param>
    /// <param name="cancellationToken">Cancels the restore.</param>
    /// <returns>What was done.</returns>
    /// <exception cref="TransferRequestException">The export is read-only or its size differs from the disk's.</exception>
    /// <exception cref="TargetWriteException">Writing (or, changed-only, reading) the target failed; names the offset.</exception>
    public Task<DiskRestoreResult> ToNbdAsync(DiskReader source, NbdUri target, RestoreWriteMode mode, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(target);
        if (!Enum.IsDefined(mode))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown restore mode");
        }

        var reporter = new ProgressReporter(source.Disk.Name, progress, _time, _options.ProgressInterval);
        return ToNbdCoreAsync(source, target, ct => NbdClient.ConnectAsync(target, ClientOptions(mode), ct), mode, reporter, cancellationToken);
    }

    /// <summary>Writes a point's disk to a new local image; the file appears under <paramref name="path"/> only when complete.</summary>
    /// <param name="source">The point's disk.</param>
    /// <param name="path">The image to create (must not exist).</param>
    /// <param name="format">Raw or qcow2.</param>
    /// <param name="progress">Progress sink.</param>
    /// <param name="cancellationToken">Cancels the restore; nothing is left behind.</param>
    /// <returns>What was done.</returns>
    /// <exception cref="TransferRequestException">The path exists or its directory does not.</exception>
    public async Task<DiskRestoreResult> ToFileAsync(DiskReader source, string path, DiskImageFormat format, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!Enum.IsDefined(format))
        {
            throw new ArgumentOutOfRangeException(nameof(format), format, "unknown image format");
        }

        var disk = source.Disk.Name;
        var full = Path.GetFullPath(path);
        if (File.Exists(full) || Directory.Exists(full))
        {
            throw new TransferRequestException($"Disk {disk}: the restore target {full} already exists; restores never overwrite a file") { Disk = disk };
        }

        if (!Directory.Exists(Path.GetDirectoryName(full)))
        {
            throw new TransferRequestException($"Disk {disk}: the directory of the restore target {full} does not exist") { Disk = disk };
        }

        var temporary = full + ".partial-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        var reporter = new ProgressReporter(disk, progress, _time, _options.ProgressInterval);
        var result = await ToImageAsync(source, temporary, full, format, reporter, cancellationToken);
        LogFileRestored(_logger, disk, full, format, result.ChunksWritten, result.BytesWritten);
        return result;
    }

    private static string FormatName(DiskImageFormat format) => format == DiskImageFormat.Raw ? "raw" : "qcow2";

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);

    private static void DeleteQuietly(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort on a failure path: the original error is what the caller sees.
        }
    }

    private NbdClientOptions ClientOptions(RestoreWriteMode mode)
    {
        var options = new NbdClientOptions
        {
            Connections = _options.Connections,
            RequestTimeout = _options.RequestTimeout,
            TimeProvider = _time,
        };
        if (mode == RestoreWriteMode.ChangedOnly)
        {
            options.MetaContexts.Add(NbdContexts.BaseAllocation);
        }

        return options;
    }

    private async Task<DiskRestoreResult> ToNbdCoreAsync(DiskReader source, NbdUri target, Func<CancellationToken, Task<NbdClient>> connect, RestoreWriteMode mode, ProgressReporter reporter, CancellationToken cancellationToken)
    {
        var disk = source.Disk.Name;
        reporter.Enter(TransferPhase.Planning);
        ReconnectingClient connection;
        try
        {
            connection = await ReconnectingClient.OpenAsync(
                connect,
                _options.ReconnectAttempts,
                _time,
                (attempt, cause) => LogReconnecting(_logger, disk, attempt, _options.ReconnectAttempts, cause.Message),
                cancellationToken);
        }
        catch (NbdException e)
        {
            throw new TargetWriteException($"Disk {disk}: cannot open the restore target {target}: {e.Message}", e) { Disk = disk };
        }

        await using (connection)
        {
            var client = connection.Current.Client;
            if (client.Export.IsReadOnly)
            {
                throw new TransferRequestException($"Disk {disk}: the restore target {target} is read-only") { Disk = disk };
            }

            if (client.Export.Size != (ulong)source.Size)
            {
                throw new TransferRequestException(Invariant($"Disk {disk}: the restore target {target} is {client.Export.Size} bytes but the disk is {source.Size} bytes")) { Disk = disk };
            }

            IReadOnlyList<NbdExtent>? zeroMap = null;
            if (mode == RestoreWriteMode.ChangedOnly && client.HasContext(NbdContexts.BaseAllocation) && source.Size > 0)
            {
                var maps = await TargetOpAsync(disk, 0, () => connection.RunAsync((c, ct) => c.MapAsync([NbdContexts.BaseAllocation], cancellationToken: ct), cancellationToken));
                zeroMap = maps[NbdContexts.BaseAllocation];
            }

            var result = await RestoreChunksAsync(source, new NbdTarget(connection), mode, zeroMap, reporter, cancellationToken);
            reporter.Enter(TransferPhase.Finishing);
            if (client.Export.Has(NbdTransmissionFlags.SendFlush))
            {
                // A flush on a re-opened connection covers the writes the server completed on the old one as well.
                await TargetOpAsync(disk, 0, () => connection.RunAsync((c, ct) => c.FlushAsync(ct), cancellationToken));
            }

            result = result with { Reconnects = connection.Reconnects };

            await TargetOpAsync(disk, 0, () => connection.Current.Client.DisconnectAsync(cancellationToken));
            reporter.Enter(TransferPhase.Done);
            result = result with { Elapsed = reporter.Elapsed };
            LogRestored(_logger, disk, target, mode, result.ChunksWritten, result.ChunksZeroed, result.ChunksSkipped);
            return result;
        }
    }

    private async Task<DiskRestoreResult> ToImageAsync(DiskReader source, string temporary, string final, DiskImageFormat format, ProgressReporter reporter, CancellationToken cancellationToken)
    {
        var disk = source.Disk.Name;
        reporter.Enter(TransferPhase.Planning);
        var complete = false;
        try
        {
            DiskRestoreResult result;
            await using (var file = new FileStream(temporary, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, bufferSize: 0))
            {
                using var direct = NativeMethods.TryOpenDirect(temporary);
                if (format == DiskImageFormat.Raw)
                {
                    // Sized up front: chunks never written stay holes.
                    file.SetLength(source.Size);
                    result = await RestoreChunksAsync(source, new FileTarget(file.SafeFileHandle, direct, temporary), RestoreWriteMode.FreshTarget, null, reporter, cancellationToken);
                    reporter.Enter(TransferPhase.Finishing);
                }
                else
                {
                    var image = new Qcow2ImageWriter(file.SafeFileHandle, direct, temporary, source.Size);
                    result = await RestoreChunksAsync(source, image, RestoreWriteMode.FreshTarget, null, reporter, cancellationToken);
                    reporter.Enter(TransferPhase.Finishing);
                    await Task.Run(image.Complete, cancellationToken);
                }

                await Task.Run(() => file.Flush(flushToDisk: true), cancellationToken);
            }

            cancellationToken.ThrowIfCancellationRequested();
            File.Move(temporary, final, overwrite: false);
            complete = true;
            reporter.Enter(TransferPhase.Done);
            return result with { Elapsed = reporter.Elapsed };
        }
        catch (IOException e)
        {
            throw new TargetWriteException($"Disk {disk}: writing the {FormatName(format)} image {final} failed: {e.Message}", e) { Disk = disk };
        }
        finally
        {
            if (!complete)
            {
                DeleteQuietly(temporary);
            }
        }
    }

    // The chunk loop shared by every target: Parallelism workers take chunks in order, each with one pooled buffer.
    private async Task<DiskRestoreResult> RestoreChunksAsync(DiskReader source, IRestoreTarget target, RestoreWriteMode mode, IReadOnlyList<NbdExtent>? zeroMap, ProgressReporter reporter, CancellationToken cancellationToken)
    {
        var disk = source.Disk.Name;
        var count = source.ChunkCount;
        long total = 0;
        for (long i = 0; i < count; i++)
        {
            if (mode == RestoreWriteMode.ChangedOnly || !source.IsZero(i))
            {
                total += source.RangeOf(i).Length;
            }
        }

        reporter.TotalBytes = total;
        reporter.TotalExtents = count;
        reporter.Enter(TransferPhase.Transferring);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        Exception? firstError = null;
        long next = -1;
        long written = 0;
        long zeroed = 0;
        long skipped = 0;
        long bytesWritten = 0;
        long bytesCompared = 0;

        async Task WorkAsync()
        {
            byte[]? buffer = null;
            Memory<byte> work = default;
            try
            {
                while (true)
                {
                    var i = Interlocked.Increment(ref next);
                    if (i >= count)
                    {
                        return;
                    }

                    stop.Token.ThrowIfCancellationRequested();
                    var (offset, length) = source.RangeOf(i);
                    var zero = source.IsZero(i);
                    if (work.IsEmpty)
                    {
                        // A local file takes O_DIRECT writes straight from this buffer: aligned and pinned, not pooled.
                        work = target.WantsAlignedBuffers ? DirectIo.AllocateAligned(source.ChunkSize) : buffer = ArrayPool<byte>.Shared.Rent(source.ChunkSize);
                    }

                    var data = work[..length];
                    var done = mode == RestoreWriteMode.ChangedOnly || !zero ? length : 0;
                    if (mode == RestoreWriteMode.ChangedOnly)
                    {
                        if (zero && zeroMap is not null && ReadsAsZero(zeroMap, offset, offset + length))
                        {
                            Interlocked.Increment(ref skipped);
                            reporter.Add(done, 1);
                            continue;
                        }

                        await TargetOpAsync(disk, offset, () => target.ReadAsync(offset, data, stop.Token));
                        Interlocked.Add(ref bytesCompared, length);
                        if (source.ContentMatches(i, data.Span))
                        {
                            Interlocked.Increment(ref skipped);
                            reporter.Add(done, 1);
                            continue;
                        }
                    }

                    if (zero)
                    {
                        if (mode == RestoreWriteMode.FreshTarget)
                        {
                            Interlocked.Increment(ref skipped);
                        }
                        else
                        {
                            await TargetOpAsync(disk, offset, () => target.ZeroAsync(offset, data, stop.Token));
                            Interlocked.Increment(ref zeroed);
                        }
                    }
                    else
                    {
                        // Repository errors (missing or damaged chunk) propagate as they are: they name point, disk and range.
                        await source.ReadChunkAsync(i, data, stop.Token);
                        long bytes = length;
                        if (mode == RestoreWriteMode.FreshTarget)
                        {
                            // A fresh target already reads as zeros: only the segments holding data are written, so it
                            // stays sparse inside chunks too and a qcow2 allocates no clusters for zeros.
                            var runs = DataRuns(data.Span, SparseSegment);
                            bytes = runs.Sum(r => (long)r.Length);
                            await Task.WhenAll(runs.Select(r => TargetOpAsync(disk, offset + r.Start, () => target.WriteAsync(offset + r.Start, data.Slice(r.Start, r.Length), stop.Token))));
                        }
                        else
                        {
                            await TargetOpAsync(disk, offset, () => target.WriteAsync(offset, data, stop.Token));
                        }

                        Interlocked.Increment(ref written);
                        Interlocked.Add(ref bytesWritten, bytes);
                    }

                    reporter.Add(done, 1);
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

        var workers = new Task[(int)Math.Clamp(count, 0, _options.Parallelism)];
        for (var w = 0; w < workers.Length; w++)
        {
            workers[w] = Task.Run(WorkAsync, CancellationToken.None);
        }

        try
        {
            await Task.WhenAll(workers);
        }
        catch when (firstError is not null && !cancellationToken.IsCancellationRequested)
        {
            ExceptionDispatchInfo.Throw(firstError);
        }

        return new DiskRestoreResult
        {
            Disk = disk,
            ChunksWritten = written,
            ChunksZeroed = zeroed,
            ChunksSkipped = skipped,
            BytesWritten = bytesWritten,
            BytesCompared = bytesCompared,
            Elapsed = reporter.Elapsed,
        };
    }

    // The runs of a chunk that hold data, in whole segments (the last may be short), merged; all-zero segments are left out.
    internal static List<(int Start, int Length)> DataRuns(ReadOnlySpan<byte> chunk, int segment)
    {
        var runs = new List<(int Start, int Length)>();
        for (var at = 0; at < chunk.Length; at += segment)
        {
            var length = Math.Min(segment, chunk.Length - at);
            if (!chunk.Slice(at, length).ContainsAnyExcept((byte)0))
            {
                continue;
            }

            if (runs.Count > 0 && runs[^1].Start + runs[^1].Length == at)
            {
                runs[^1] = (runs[^1].Start, runs[^1].Length + length);
            }
            else
            {
                runs.Add((at, length));
            }
        }

        return runs;
    }

    // Whether the target's allocation map says [start, end) reads as zeroes from end to end.
    private static bool ReadsAsZero(IReadOnlyList<NbdExtent> map, long start, long end)
    {
        int low = 0, high = map.Count - 1;
        while (low < high)
        {
            var mid = (low + high + 1) / 2;
            if ((long)map[mid].Offset <= start)
            {
                low = mid;
            }
            else
            {
                high = mid - 1;
            }
        }

        var at = start;
        for (var k = low; k < map.Count && at < end; k++)
        {
            var extent = map[k];
            if ((long)extent.Offset > at || !extent.IsZero)
            {
                return false;
            }

            at = Math.Max(at, (long)extent.End);
        }

        return at >= end;
    }

    // Runs a target operation; its IO and NBD failures become a TargetWriteException naming the offset.
    private static async Task TargetOpAsync(string disk, long offset, Func<Task> operation)
    {
        try
        {
            await operation();
        }
        catch (Exception e) when (e is NbdException or IOException or UnauthorizedAccessException or ConnectionLostException)
        {
            throw new TargetWriteException(Invariant($"Disk {disk}: the restore target failed at offset {offset}: {e.Message}"), e) { Disk = disk, Offset = offset };
        }
    }

    private static async Task<T> TargetOpAsync<T>(string disk, long offset, Func<Task<T>> operation)
    {
        try
        {
            return await operation();
        }
        catch (Exception e) when (e is NbdException or IOException or UnauthorizedAccessException or ConnectionLostException)
        {
            throw new TargetWriteException(Invariant($"Disk {disk}: the restore target failed at offset {offset}: {e.Message}"), e) { Disk = disk, Offset = offset };
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Disk {Disk}: NBD connection to the restore target lost, reconnecting (attempt {Attempt} of {MaxAttempts}): {Reason}")]
    private static partial void LogReconnecting(ILogger logger, string disk, int attempt, int maxAttempts, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Disk {Disk}: restored to {Target} ({Mode}): {ChunksWritten} chunks written, {ChunksZeroed} zeroed, {ChunksSkipped} skipped")]
    private static partial void LogRestored(ILogger logger, string disk, NbdUri target, RestoreWriteMode mode, long chunksWritten, long chunksZeroed, long chunksSkipped);

    [LoggerMessage(Level = LogLevel.Information, Message = "Disk {Disk}: restored to {Path} ({Format}): {ChunksWritten} chunks, {BytesWritten} bytes")]
    private static partial void LogFileRestored(ILogger logger, string disk, string path, DiskImageFormat format, long chunksWritten, long bytesWritten);
}
