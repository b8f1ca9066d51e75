using System.Buffers;
using System.Threading.Channels;
using Drydock.Nbd.Client;
using Drydock.Nbd.Protocol;
using Microsoft.Win32.SafeHandles;

namespace Drydock.Nbd.Copy;

/// <summary>Settings of an <see cref="NbdCopier"/>.</summary>
public sealed class NbdCopyOptions
{
    /// <summary>Bytes per READ request. Default: 256 KiB (what nbdcopy uses; larger requests are slower here).</summary>
    public int RequestSize { get; set; } = 256 * 1024;

    /// <summary>READ requests in flight across all connections. Default: 64 (deep enough to hide a millisecond of latency per request).</summary>
    public int RequestsInFlight { get; set; } = 64;

    /// <summary>Size of the windows the allocation map is walked in, so reading starts before the map is complete. Default: 4 GiB.</summary>
    public ulong MapWindow { get; set; } = 4UL * 1024 * 1024 * 1024;

    /// <summary>Checks the settings.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    public void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(RequestSize, 4096, nameof(RequestSize));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(RequestSize, (int)NbdSizes.DefaultMaxPayload, nameof(RequestSize));
        ArgumentOutOfRangeException.ThrowIfLessThan(RequestsInFlight, 1, nameof(RequestsInFlight));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(RequestsInFlight, 4096, nameof(RequestsInFlight));
        ArgumentOutOfRangeException.ThrowIfLessThan(MapWindow, (ulong)RequestSize, nameof(MapWindow));
    }
}

/// <summary>What a copy did.</summary>
/// <param name="ExportSize">Size of the source export.</param>
/// <param name="BytesRead">Bytes read over NBD (data extents only).</param>
/// <param name="BytesWritten">Bytes written to the destination (all-zero reads are not written).</param>
/// <param name="BytesSkipped">Bytes never read because the allocation map reported them as zeroes.</param>
/// <param name="UsedAllocationMap">Whether <c>base:allocation</c> guided the copy.</param>
public sealed record NbdCopyResult(ulong ExportSize, ulong BytesRead, ulong BytesWritten, ulong BytesSkipped, bool UsedAllocationMap);

/// <summary>
/// Copies a whole export to a destination, sparse-aware like nbdcopy: ranges that <c>base:allocation</c>
/// reports as reading zeroes are neither read nor written, and data that reads as all zeroes is not written
/// (the destination starts out as zeroes). Reads are pipelined across every connection of the client.
/// The first error stops the copy and is reported with the range it hit.
/// </summary>
public sealed class NbdCopier
{
    // Ranges are queued as segments of this many requests, which one worker reads one after another: a queue
    // operation per request woke the planner (a thread-pool hand-off) for every 256 KiB read.
    private const int RequestsPerSegment = 16;

    private readonly NbdClient _client;
    private readonly NbdCopyOptions _options;
    private long _bytesRead;
    private long _bytesWritten;
    private long _bytesSkipped;
    private Exception? _firstError;
    private CancellationTokenSource? _stop; // one copy at a time per copier

    /// <summary>Creates a copier.</summary>
    /// <param name="client">A connected client; negotiate <c>base:allocation</c> for sparse copies.</param>
    /// <param name="options">Copy settings.</param>
    public NbdCopier(NbdClient client, NbdCopyOptions? options = null)
    {
        _client = client;
        _options = options ?? new NbdCopyOptions();
        _options.Validate();
    }

    /// <summary>Bytes accounted for so far (read, or skipped as zeroes): the progress numerator.</summary>
    public ulong BytesDone => (ulong)(Interlocked.Read(ref _bytesRead) + Interlocked.Read(ref _bytesSkipped));

    /// <summary>Copies the export into <paramref name="destination"/>.</summary>
    /// <param name="destination">Where the bytes go.</param>
    /// <param name="cancellationToken">Cancels the copy.</param>
    /// <returns>What was copied.</returns>
    public async Task<NbdCopyResult> CopyAsync(INbdCopyDestination destination, CancellationToken cancellationToken = default)
    {
        var size = _client.Export.Size;
        await destination.PrepareAsync(size, cancellationToken);
        var useMap = _client.HasContext(NbdContexts.BaseAllocation);
        var alignment = _client.Export.BlockSizes.Minimum;
        var requestSize = (uint)Math.Min((uint)_options.RequestSize, _client.Export.MaxPayload);
        requestSize = Math.Max(requestSize / alignment * alignment, alignment);

        // The planner walks the allocation map window by window and queues ranges; each worker owns one
        // buffer and loops read → write → next range, so a completed read turns into the next request
        // without passing through a dispatcher.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _stop = stop;
        var ranges = Channel.CreateBounded<CopyRange>(new BoundedChannelOptions(_options.RequestsInFlight * 4)
        {
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        var workers = new Task[_options.RequestsInFlight];
        for (var i = 0; i < workers.Length; i++)
        {
            workers[i] = WorkAsync(destination, ranges.Reader, (int)requestSize);
        }

        var planner = PlanAsync(ranges.Writer, size, useMap, requestSize);
        try
        {
            await Task.WhenAll(workers.Append(planner));
        }
        catch when (_firstError is not null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(_firstError);
        }

        await destination.CompleteAsync(cancellationToken);
        return new NbdCopyResult(size, (ulong)_bytesRead, (ulong)_bytesWritten, (ulong)_bytesSkipped, useMap);
    }

    private async Task PlanAsync(ChannelWriter<CopyRange> ranges, ulong size, bool useMap, uint requestSize)
    {
        var stop = _stop!;
        var segment = (ulong)requestSize * RequestsPerSegment;
        try
        {
            for (ulong window = 0; window < size; window += _options.MapWindow)
            {
                var windowEnd = Math.Min(size, window + _options.MapWindow);
                IReadOnlyList<NbdExtent> extents = useMap
                    ? (await _client.MapAsync([NbdContexts.BaseAllocation], window, windowEnd - window, stop.Token))[NbdContexts.BaseAllocation]
                    : [new NbdExtent(window, windowEnd - window, 0)];
                foreach (var extent in extents)
                {
                    if (extent.IsZero)
                    {
                        Interlocked.Add(ref _bytesSkipped, (long)extent.Length);
                        continue;
                    }

                    for (var at = extent.Offset; at < extent.End; at += segment)
                    {
                        await ranges.WriteAsync(new CopyRange(at, Math.Min(segment, extent.End - at)), stop.Token);
                    }
                }
            }

            ranges.Complete();
        }
        catch (Exception e)
        {
            await FailAsync(e, stop);
            ranges.TryComplete(e);
            throw;
        }
    }

    private async Task WorkAsync(INbdCopyDestination destination, ChannelReader<CopyRange> ranges, int bufferSize)
    {
        var stop = _stop!;
        byte[]? buffer = null;
        try
        {
            while (await ranges.WaitToReadAsync(stop.Token))
            {
                while (ranges.TryRead(out var range))
                {
                    // Rented on first use: a small export never touches most workers' buffers.
                    buffer ??= ArrayPool<byte>.Shared.Rent(bufferSize);
                    for (var at = range.Offset; at < range.End; at += (ulong)bufferSize)
                    {
                        var length = (int)Math.Min((ulong)bufferSize, range.End - at);
                        var data = buffer.AsMemory(0, length);
                        await _client.ReadAsync(at, data, stop.Token);
                        Interlocked.Add(ref _bytesRead, length);
                        if (destination.WantsData && data.Span.ContainsAnyExcept((byte)0))
                        {
                            await destination.WriteAsync(at, data, stop.Token);
                            Interlocked.Add(ref _bytesWritten, length);
                        }
                    }
                }
            }
        }
        catch (Exception e)
        {
            await FailAsync(e, stop);
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

    // A class, not a tuple: generic framework code over reference types is precompiled (ReadyToRun),
    // over our value types it would be compiled at start-up.
    private sealed record CopyRange(ulong Offset, ulong Length)
    {
        public ulong End => Offset + Length;
    }

    // The first error is the one reported; the cancellations it causes in other workers are its consequences.
    private async Task FailAsync(Exception error, CancellationTokenSource stop)
    {
        if (error is not OperationCanceledException || !stop.IsCancellationRequested)
        {
            Interlocked.CompareExchange(ref _firstError, error, null);
        }

        await stop.CancelAsync();
    }
}

/// <summary>Where a copy writes.</summary>
public interface INbdCopyDestination
{
    /// <summary>Whether data must be delivered (false for a null sink: reads still happen).</summary>
    bool WantsData { get; }

    /// <summary>Makes the destination <paramref name="size"/> bytes of zeroes.</summary>
    /// <param name="size">The export size.</param>
    /// <param name="cancellationToken">Cancels.</param>
    /// <returns>A task.</returns>
    ValueTask PrepareAsync(ulong size, CancellationToken cancellationToken);

    /// <summary>Writes data at an offset (may be called concurrently for disjoint ranges).</summary>
    /// <param name="offset">Offset.</param>
    /// <param name="data">The bytes.</param>
    /// <param name="cancellationToken">Cancels.</param>
    /// <returns>A task.</returns>
    ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken);

    /// <summary>Makes everything written durable.</summary>
    /// <param name="cancellationToken">Cancels.</param>
    /// <returns>A task.</returns>
    ValueTask CompleteAsync(CancellationToken cancellationToken);
}

/// <summary>Discards everything (<c>null:</c>): measures reading alone.</summary>
public sealed class NullCopyDestination : INbdCopyDestination
{
    /// <inheritdoc/>
    public bool WantsData => false;

    /// <inheritdoc/>
    public ValueTask PrepareAsync(ulong size, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <inheritdoc/>
    public ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <inheritdoc/>
    public ValueTask CompleteAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;
}

/// <summary>
/// A regular file, created (or truncated) and sized to the export, so unwritten ranges stay sparse holes.
/// It is written under a temporary name and renamed into place only when the copy completes: a failed copy
/// never leaves a file that looks complete.
/// </summary>
public sealed class FileCopyDestination : INbdCopyDestination, IAsyncDisposable
{
    private readonly string _path;
    private readonly string _temporaryPath;
    private FileStream? _file;
    private bool _completed;

    /// <summary>Creates a destination for <paramref name="path"/>.</summary>
    /// <param name="path">The file to create or replace.</param>
    public FileCopyDestination(string path)
    {
        _path = Path.GetFullPath(path);
        var directory = Path.GetDirectoryName(_path) ?? ".";
        _temporaryPath = Path.Combine(directory, $".{Path.GetFileName(_path)}.{Environment.ProcessId}.partial");
    }

    /// <inheritdoc/>
    public bool WantsData => true;

    /// <inheritdoc/>
    public ValueTask PrepareAsync(ulong size, CancellationToken cancellationToken)
    {
        if (Directory.Exists(_path))
        {
            throw new IOException($"destination {_path} is a directory");
        }

        var info = new FileInfo(_path);
        if (info.Exists && (info.Attributes & FileAttributes.Device) != 0)
        {
            throw new IOException($"destination {_path} is a device; only regular files and null: are supported");
        }

        _file = new FileStream(_temporaryPath, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0, FileOptions.Asynchronous);
        _file.SetLength((long)size);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(ulong offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        => RandomAccess.WriteAsync(Handle, data, (long)offset, cancellationToken);

    /// <inheritdoc/>
    public async ValueTask CompleteAsync(CancellationToken cancellationToken)
    {
        var file = _file ?? throw new InvalidOperationException("PrepareAsync was not called");
        await Task.Run(() => file.Flush(flushToDisk: true), cancellationToken);
        await file.DisposeAsync();
        _file = null;
        File.Move(_temporaryPath, _path, overwrite: true);
        _completed = true;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_file is not null)
        {
            await _file.DisposeAsync();
            _file = null;
        }

        if (!_completed)
        {
            File.Delete(_temporaryPath);
        }
    }

    private SafeFileHandle Handle => _file?.SafeFileHandle ?? throw new InvalidOperationException("PrepareAsync was not called");
}
