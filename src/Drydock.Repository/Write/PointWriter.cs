using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Threading.Channels;
using Drydock.Repository.Format;
using Drydock.Repository.Maintenance;
using Drydock.Storage;

namespace Drydock.Repository.Write;

/// <summary>
/// One backup session of one domain: add disks, submit their chunks, then <see cref="CommitAsync"/>. Chunks flow
/// through a bounded pipeline of <see cref="RepositoryOptions.MaxParallelism"/> workers: all-zero check → id
/// (SHA-256 or keyed HMAC) → dedup (known ids, then an existence check) → compress → encrypt → create-only put.
/// Commit order: chunks → indexes → GC handshake → signed manifest (create-only: the sequence number fences a
/// racing writer). Disposing an uncommitted writer publishes nothing.
/// </summary>
public sealed class PointWriter : IAsyncDisposable
{
    private readonly BackupRepository _repository;
    private readonly RepositoryLease _lease;
    private readonly Channel<ChunkWork> _queue;
    private readonly Task[] _workers;
    private readonly CancellationTokenSource _abort = new();
    private readonly SemaphoreSlim _cpu;
    private readonly ConcurrentDictionary<ChunkId, byte> _present = new();
    private readonly ConcurrentDictionary<ChunkId, byte> _repaired = new();
    private readonly HashSet<ChunkId> _quarantined;
    private readonly List<DiskWriter> _disks = [];
    private Exception? _failure;
    private int _state; // 0 open, 1 committing, 2 committed, 3 aborted

    private PointWriter(BackupRepository repository, PointRequest request, PointRef point, RepositoryLease lease, HashSet<ChunkId> quarantined, DateTimeOffset startedAt)
    {
        _repository = repository;
        Request = request;
        Point = point;
        _lease = lease;
        _quarantined = quarantined;
        StartedAt = startedAt;
        // Workers = requests in flight; the CPU stage inside them is limited to MaxParallelism at a time.
        var cpu = Math.Max(1, repository.Options.MaxParallelism);
        _cpu = new SemaphoreSlim(cpu, cpu);
        var workers = Math.Max(cpu, repository.Options.MaxConcurrentRequests);
        _queue = Channel.CreateBounded<ChunkWork>(new BoundedChannelOptions(Math.Max(1, repository.Options.QueueDepth))
        {
            SingleReader = false,
            SingleWriter = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _workers = new Task[workers];
        for (var i = 0; i < workers; i++)
        {
            _workers[i] = Task.Run(WorkAsync);
        }
    }

    /// <summary>The point this session will commit.</summary>
    public PointRef Point { get; }

    /// <summary>Reads a committed chunk (a parent's) and checks it fully, as a restore would.</summary>
    internal Task ReadCommittedChunkAsync(ChunkId id, Memory<byte> destination, RepositoryLocationInfo where, CancellationToken cancellationToken)
        => _repository.ReadChunkAsync(id, destination, where, cancellationToken);

    /// <summary>The request.</summary>
    public PointRequest Request { get; }

    /// <summary>When the session started (the manifest's creation time).</summary>
    public DateTimeOffset StartedAt { get; }

    /// <summary>The disks added so far.</summary>
    public IReadOnlyList<DiskWriter> Disks => _disks;

    /// <summary>Adds a disk. For incremental/differential disks the parent's manifest and index are loaded and checked
    /// (same disk identity, no shrink); unchanged chunks will be taken from it.</summary>
    /// <param name="request">The disk.</param>
    /// <param name="cancellationToken">Cancels the load.</param>
    /// <returns>The disk writer.</returns>
    public async Task<DiskWriter> AddDiskAsync(DiskRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfUnusable();
        var where = new RepositoryLocationInfo(Point, request.Name);
        if (!BackupRepository.IsValidDiskName(request.Name) || _disks.Any(d => d.Name == request.Name))
        {
            throw new ArgumentException($"disk name '{request.Name}' is invalid or already added", nameof(request));
        }

        if (!Enum.IsDefined(request.Level))
        {
            throw new ArgumentException("unknown level", nameof(request));
        }

        if (request.Level == DiskBackupLevel.Full)
        {
            var chunkSize = request.ChunkSize ?? _repository.Config.ChunkSize;
            if (DiskIndex.CheckGeometry(request.VirtualSize, chunkSize) is { } problem)
            {
                throw new ArgumentException(problem, nameof(request));
            }

            var full = new DiskWriter(this, request, chunkSize, null, null, []);
            _disks.Add(full);
            return full;
        }

        if (request.ParentSequence is not { } parentSequence || parentSequence <= 0 || parentSequence >= Point.Sequence)
        {
            throw new LineageBrokenException($"a {request.Level} disk needs a parent sequence below #{Point.Sequence}", where);
        }

        var parentRef = Point with { Sequence = parentSequence };
        var parent = await _repository.OpenPointAsync(parentRef, cancellationToken);
        var parentDisk = parent.Manifest.Disks.FirstOrDefault(d => d.Name == request.Name)
            ?? throw new LineageBrokenException($"parent #{parentSequence} has no disk {request.Name}: take a full backup", where);
        if (parentDisk.Identity != request.Identity)
        {
            throw new LineageBrokenException($"disk identity changed ('{parentDisk.Identity}' → '{request.Identity}'): take a full backup", where);
        }

        if (request.Level == DiskBackupLevel.Differential && parentDisk.Level != DiskBackupLevel.Full)
        {
            throw new LineageBrokenException($"the parent #{parentSequence} of a differential must be a full", where);
        }

        if (request.VirtualSize < parentDisk.VirtualSize)
        {
            throw new LineageBrokenException(string.Create(CultureInfo.InvariantCulture, $"disk shrank from {parentDisk.VirtualSize} to {request.VirtualSize} bytes: take a full backup"), where);
        }

        if (DiskIndex.CheckGeometry(request.VirtualSize, parentDisk.ChunkSize) is { } bad)
        {
            throw new ArgumentException(bad, nameof(request));
        }

        var parentIndex = await _repository.ReadIndexAsync(parentDisk, new RepositoryLocationInfo(parentRef, parentDisk.Name), cancellationToken);
        var refresh = new List<long>();
        for (long i = 0; i < parentIndex.Count; i++)
        {
            var id = parentIndex[i];
            if (id.IsZero)
            {
                continue;
            }

            if (_quarantined.Contains(id))
            {
                refresh.Add(i);
            }
            else
            {
                // Referenced by a committed index: present, no existence check needed when the data repeats.
                _present.TryAdd(id, 0);
            }
        }

        var disk = new DiskWriter(this, request, parentDisk.ChunkSize, parentDisk, parentIndex, refresh);
        _disks.Add(disk);
        return disk;
    }

    /// <summary>Waits for every chunk, writes the indexes, checks against concurrent GC, and publishes the signed
    /// manifest. Exactly one of two racing writers of the same point succeeds (<see cref="PointConflictException"/>).</summary>
    /// <param name="cancellationToken">Cancels the commit (nothing is published if cancelled before the manifest).</param>
    /// <returns>The committed manifest.</returns>
    public async Task<PointManifest> CommitAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfUnusable();
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("The session is already committing or finished.");
        }

        try
        {
            if (_disks.Count == 0)
            {
                throw new CommitRefusedException("A point needs at least one disk", new RepositoryLocationInfo(Point));
            }

            _queue.Writer.TryComplete();
            await Task.WhenAll(_workers).WaitAsync(cancellationToken);
            if (_failure is not null)
            {
                throw Failure();
            }

            // Chunks durable before any index names them; indexes durable before the manifest; the manifest
            // durable before the commit is reported.
            await _repository.Store.FlushAsync(cancellationToken);
            var disks = new List<DiskManifest>();
            var referenced = new HashSet<ChunkId>();
            foreach (var disk in _disks)
            {
                var inherited = disk.FillFromParent(_quarantined);
                foreach (var id in disk.Index.Ids)
                {
                    if (!id.IsZero)
                    {
                        referenced.Add(id);
                    }
                }

                var indexId = await WriteIndexAsync(disk, cancellationToken);
                disks.Add(disk.ToManifest(indexId, inherited));
            }

            await _repository.Store.FlushAsync(cancellationToken);
            await CheckConcurrentGcAsync(referenced, cancellationToken);

            var now = _repository.Time.GetUtcNow();
            if (now - StartedAt > _repository.Options.MaxSessionDuration)
            {
                throw new CommitRefusedException(
                    $"The session ran {now - StartedAt}, over the limit of {_repository.Options.MaxSessionDuration} that keeps its chunks safe from GC; rerun the backup",
                    new RepositoryLocationInfo(Point));
            }

            // Still the domain's writer? (A lease taken over after expiry means another writer may be running.)
            await _lease.RenewAsync(cancellationToken);

            var manifest = new PointManifest
            {
                Format = "drydock-manifest",
                Version = 1,
                RepositoryId = _repository.RepositoryId,
                Tenant = Point.Tenant,
                DomainId = Point.DomainId,
                DomainName = Request.DomainName,
                Sequence = Point.Sequence,
                WriterId = Request.WriterId,
                CreatedAt = StartedAt,
                FinishedAt = now,
                DomainXml = Request.DomainXml,
                Disks = disks,
                Labels = new Dictionary<string, string>(Request.Labels),
            };
            var name = ObjectNames.Manifest(Point);
            try
            {
                await _repository.WriteSignedAsync(name, ObjectType.Manifest, "manifest", manifest, RepositoryJsonContext.Default.PointManifest, BlobCondition.CreateOnly, cancellationToken);
            }
            catch (BlobAlreadyExistsException)
            {
                // Ours (a retried put whose first attempt landed) or a racing writer's?
                var existing = await _repository.ReadManifestAsync(Point, cancellationToken);
                if (existing.WriterId != Request.WriterId || existing.CreatedAt != StartedAt)
                {
                    throw new PointConflictException(new RepositoryLocationInfo(Point, ObjectName: name));
                }
            }

            // The manifest is published: the point is committed, and a cancellation from here on must neither fail the
            // commit nor make the caller abandon the capture whose checkpoint is now the chain's base (F04).
            Volatile.Write(ref _state, 2);
            await _repository.Store.FlushAsync(CancellationToken.None);
            foreach (var id in _repaired.Keys)
            {
                await _repository.Store.DeleteAsync(ObjectNames.Quarantine(id), null, CancellationToken.None);
            }

            var uploaded = disks.Sum(d => d.Stats.UploadedChunks);
            var uploadedBytes = disks.Sum(d => d.Stats.BytesUploaded);
            BackupRepository.LogCommitted(_repository.Logger, Point, disks.Count, uploaded, uploadedBytes);
            await _lease.ReleaseAsync(CancellationToken.None);
            return manifest;
        }
        catch when (Volatile.Read(ref _state) != 2)
        {
            // Nothing was published; let the domain's next backup start right away.
            Volatile.Write(ref _state, 3);
            await _abort.CancelAsync();
            await _lease.ReleaseAsync(CancellationToken.None);
            throw;
        }
    }

    /// <summary>Aborts an uncommitted session: stops the workers and releases the domain lease. Chunks already
    /// uploaded stay unreferenced until GC removes them after the grace window.</summary>
    /// <returns>A task.</returns>
    public async ValueTask DisposeAsync()
    {
        if (Volatile.Read(ref _state) != 2)
        {
            Volatile.Write(ref _state, 3);
            await _abort.CancelAsync();
            _queue.Writer.TryComplete();
        }

        try
        {
            await Task.WhenAll(_workers);
        }
        catch (Exception)
        {
            // Failures were reported to the caller already.
        }

        while (_queue.Reader.TryRead(out var work))
        {
            ArrayPool<byte>.Shared.Return(work.Buffer);
        }

        await _lease.ReleaseAsync(CancellationToken.None);
        _abort.Dispose();
        _cpu.Dispose();
    }

    internal static async Task<PointWriter> StartAsync(BackupRepository repository, PointRequest request, CancellationToken cancellationToken)
    {
        if (!ObjectNames.IsValidTenant(request.Tenant))
        {
            throw new ArgumentException($"tenant '{request.Tenant}' is invalid (1..64 of a-z, 0-9, '_', '-')", nameof(request));
        }

        var lease = await RepositoryLease.AcquireAsync(
            repository.Store, ObjectNames.DomainLease(request.Tenant, request.DomainId), request.WriterId,
            repository.Options.LeaseDuration, repository.Options.ClockSkewMargin, repository.Time, cancellationToken);
        try
        {
            long latest = 0;
            foreach (var prefix in new[] { ObjectNames.DomainPoints(request.Tenant, request.DomainId), ObjectNames.DomainTombstones(request.Tenant, request.DomainId) })
            {
                var root = prefix.StartsWith(ObjectNames.PointsPrefix, StringComparison.Ordinal) ? ObjectNames.PointsPrefix : ObjectNames.TombstonesPrefix;
                await foreach (var item in repository.Store.ListAsync(prefix, cancellationToken))
                {
                    if (ObjectNames.TryParsePoint(item.Name, root, out var p))
                    {
                        latest = Math.Max(latest, p.Sequence);
                    }
                }
            }

            if (request.KnownLatestSequence is { } known && latest < known)
            {
                throw new ManifestReplayException(
                    string.Create(CultureInfo.InvariantCulture, $"Storage holds points up to #{latest} but the control plane committed #{known}: refusing to reuse sequence numbers"),
                    new RepositoryLocationInfo(new PointRef(request.Tenant, request.DomainId, known)));
            }

            var quarantined = await repository.ReadQuarantineAsync(cancellationToken);
            return new PointWriter(repository, request, new PointRef(request.Tenant, request.DomainId, latest + 1), lease, quarantined, repository.Time.GetUtcNow());
        }
        catch
        {
            await lease.ReleaseAsync(CancellationToken.None);
            throw;
        }
    }

    internal async ValueTask EnqueueAsync(ChunkWork work, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _abort.Token);
        try
        {
            await _queue.Writer.WriteAsync(work, linked.Token);
        }
        catch (OperationCanceledException) when (_abort.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw Failure();
        }
        catch (ChannelClosedException)
        {
            throw Failure();
        }
    }

    internal void ThrowIfUnusable()
    {
        if (_failure is not null)
        {
            throw Failure();
        }

        if (Volatile.Read(ref _state) != 0)
        {
            throw new InvalidOperationException("The session is committing, committed or aborted.");
        }
    }

    private Exception Failure()
        => _failure is RepositoryException or BlobStoreException
            ? new CommitRefusedException("The backup session failed: " + _failure.Message, new RepositoryLocationInfo(Point), _failure)
            : new CommitRefusedException("The backup session was aborted", new RepositoryLocationInfo(Point), _failure);

    private async Task WorkAsync()
    {
        var sealedBuffer = ArrayPool<byte>.Shared.Rent(ObjectCodec.MaxSealedLength(DiskIndex.MinChunkSize));
        try
        {
            await foreach (var work in _queue.Reader.ReadAllAsync(_abort.Token))
            {
                try
                {
                    if (sealedBuffer.Length < ObjectCodec.MaxSealedLength(work.Length))
                    {
                        ArrayPool<byte>.Shared.Return(sealedBuffer);
                        sealedBuffer = ArrayPool<byte>.Shared.Rent(ObjectCodec.MaxSealedLength(work.Length));
                    }

                    await ProcessAsync(work, sealedBuffer, _abort.Token);
                }
                catch (Exception e) when (e is not OperationCanceledException || !_abort.IsCancellationRequested)
                {
                    var (offset, length) = work.Disk.Index.RangeOf(work.Index);
                    var wrapped = e is RepositoryException ? e : new CommitRefusedException($"Chunk upload failed: {e.Message}", new RepositoryLocationInfo(Point, work.Disk.Name, offset, length), e);
                    Interlocked.CompareExchange(ref _failure, wrapped, null);
                    await _abort.CancelAsync();
                    _queue.Writer.TryComplete();
                    return;
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(work.Buffer);
                }
            }
        }
        catch (OperationCanceledException) when (_abort.IsCancellationRequested)
        {
            // Aborted: the first failure (if any) is in _failure.
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(sealedBuffer);
        }
    }

    private async Task ProcessAsync(ChunkWork work, byte[] sealedBuffer, CancellationToken cancellationToken)
    {
        var data = work.Buffer.AsMemory(0, work.Length);
        var codec = _repository.Codec;
        ChunkId id;
        await _cpu.WaitAsync(cancellationToken);
        try
        {
            if (!data.Span.ContainsAnyExcept((byte)0))
            {
                work.Disk.Complete(work, ChunkId.Zero, ChunkOutcome.Zero, 0);
                return;
            }

            id = codec.ComputeId(data.Span);
        }
        finally
        {
            _cpu.Release();
        }

        var name = ObjectNames.Chunk(id);
        var repair = _quarantined.Contains(id) && !_repaired.ContainsKey(id);
        if (!repair && (_present.ContainsKey(id) || (!_quarantined.Contains(id) && await _repository.Store.ExistsAsync(name, cancellationToken))))
        {
            _present.TryAdd(id, 0);
            work.Disk.Complete(work, id, ChunkOutcome.Deduplicated, 0);
            return;
        }

        var key = id.ToArray();
        int length;
        await _cpu.WaitAsync(cancellationToken);
        try
        {
            length = codec.Seal(ObjectType.Chunk, key, data.Span, sealedBuffer);
        }
        finally
        {
            _cpu.Release();
        }

        var payload = sealedBuffer.AsMemory(0, length);
        try
        {
            await _repository.Store.PutAsync(name, payload, repair ? BlobCondition.Overwrite : BlobCondition.CreateOnly, cancellationToken);
        }
        catch (BlobAlreadyExistsException)
        {
            // F29: another writer (or our own retried put) stored it first. Check what is there; replace it only if bad.
            var (offset, entryLength) = work.Disk.Index.RangeOf(work.Index);
            var check = ArrayPool<byte>.Shared.Rent(work.Length);
            try
            {
                await _repository.ReadChunkAsync(id, check.AsMemory(0, work.Length), new RepositoryLocationInfo(Point, work.Disk.Name, offset, entryLength), cancellationToken);
                _present.TryAdd(id, 0);
                work.Disk.Complete(work, id, ChunkOutcome.Deduplicated, 0);
                return;
            }
            catch (RepositoryException e)
            {
                BackupRepository.LogRepairingChunk(_repository.Logger, id.ToString(), e.Message);
                await _repository.Store.PutAsync(name, payload, BlobCondition.Overwrite, cancellationToken);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(check);
            }
        }

        if (repair)
        {
            _repaired.TryAdd(id, 0);
        }

        _present.TryAdd(id, 0);
        work.Disk.Complete(work, id, ChunkOutcome.Uploaded, length);
    }

    private async Task<ChunkId> WriteIndexAsync(DiskWriter disk, CancellationToken cancellationToken)
    {
        var plain = disk.Index.Serialize();
        var codec = _repository.Codec;
        var id = codec.ComputeId(plain);
        var sealedObject = codec.Seal(ObjectType.Index, id.ToArray(), plain);
        try
        {
            await _repository.Store.PutAsync(ObjectNames.Index(id), sealedObject, BlobCondition.CreateOnly, cancellationToken);
        }
        catch (BlobAlreadyExistsException)
        {
            // The same content under the same id (e.g. an unchanged disk): keep it if it reads back correctly.
            try
            {
                await _repository.ReadIndexAsync(disk.ToManifest(id, 0), new RepositoryLocationInfo(Point, disk.Name), cancellationToken);
            }
            catch (RepositoryException)
            {
                await _repository.Store.PutAsync(ObjectNames.Index(id), sealedObject, BlobCondition.Overwrite, cancellationToken);
            }
        }

        return id;
    }

    /// <summary>
    /// The writer's half of the GC handshake (docs/FORMAT.md §GC). Our indexes are written; now read the GC markers.
    /// A sweep that had not started marking by then will see our indexes and keep our chunks. A sweep that did
    /// may delete chunks we reused: wait for it to finish, then check that each of our chunks it listed still exists.
    /// </summary>
    private async Task CheckConcurrentGcAsync(HashSet<ChunkId> referenced, CancellationToken cancellationToken)
    {
        var options = _repository.Options;
        var deadline = _repository.Time.GetUtcNow() + options.GcWaitTimeout;
        while (true)
        {
            var running = false;
            await foreach (var item in _repository.Store.ListAsync(ObjectNames.GcPrefix, cancellationToken))
            {
                GcMarkerDocument? marker;
                try
                {
                    marker = await _repository.ReadSignedAsync(item.Name, ObjectType.GcMarker, "gc", RepositoryJsonContext.Default.GcMarkerDocument, new RepositoryLocationInfo(ObjectName: item.Name), cancellationToken);
                }
                catch (RepositoryException)
                {
                    // A marker we cannot read is treated as a sweep in progress (the safe side).
                    marker = null;
                    running = true;
                }

                if (marker is null)
                {
                    continue;
                }

                // A marker left unfinished by a GC that died (its lease long expired) is treated as finished.
                var dead = marker.StartedAt < _repository.Time.GetUtcNow() - options.LeaseDuration - options.ClockSkewMargin;
                if (marker.State != "finished" && !dead)
                {
                    running = true;
                    BackupRepository.LogWaitingForGc(_repository.Logger, item.Name, Point);
                    continue;
                }

                if (!dead && marker.FinishedAt < StartedAt - options.ClockSkewMargin)
                {
                    continue;
                }

                foreach (var hex in marker.Candidates)
                {
                    if (ChunkId.TryParse(hex, out var id) && referenced.Contains(id) && !await _repository.Store.ExistsAsync(ObjectNames.Chunk(id), cancellationToken))
                    {
                        throw new CommitRefusedException($"Chunk {id} this point reuses was deleted by a concurrent GC ({item.Name}); rerun the backup", new RepositoryLocationInfo(Point, ObjectName: ObjectNames.Chunk(id)));
                    }
                }
            }

            if (!running)
            {
                return;
            }

            if (_repository.Time.GetUtcNow() > deadline)
            {
                throw new CommitRefusedException($"A GC sweep is still running after {options.GcWaitTimeout}; not committing", new RepositoryLocationInfo(Point));
            }

            await Task.Delay(options.GcPollInterval, _repository.Time, cancellationToken);
        }
    }
}
