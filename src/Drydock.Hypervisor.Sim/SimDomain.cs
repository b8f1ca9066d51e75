using System.Globalization;
using Drydock.Nbd;
using Drydock.Nbd.Server;

namespace Drydock.Hypervisor.Sim;

/// <summary>A checkpoint's metadata (the part libvirt keeps apart from the bitmaps, and can lose: F05, F07).</summary>
internal sealed record SimCheckpoint(string Name, DateTimeOffset CreatedAt, string? Parent, IReadOnlyList<CheckpointDisk> Disks);

/// <summary>A capture in progress on a domain.</summary>
internal sealed class SimCapture
{
    public required string Id { get; init; }

    public required SimHost Host { get; init; }

    public required DateTimeOffset CapturedAt { get; init; }

    public string? NewCheckpoint { get; init; }

    public required string StartedBy { get; init; }

    public List<(SimDisk Disk, SimDiskSnapshot Snapshot, string Export)> Disks { get; } = [];
}

/// <summary>
/// A simulated domain: its disks, checkpoint metadata, at most one capture, at most one restore export, and its
/// guest exports while it runs. The public methods are the fleet's controls and fault hooks (what an operator, the
/// guest or bad luck does); <see cref="SimDriver"/> is what Drydock sees.
/// </summary>
public sealed class SimDomain
{
    private readonly List<SimDisk> _disks = [];
    private readonly List<(string Export, SimLiveBackend Backend)> _guestExports = [];

    internal SimDomain(SimHost host, string id, string name)
    {
        Host = host;
        Id = id;
        Name = name;
    }

    /// <summary>The UUID.</summary>
    public string Id { get; }

    /// <summary>The name.</summary>
    public string Name { get; }

    /// <summary>The host it is on now.</summary>
    public SimHost Host { get; internal set; }

    /// <summary>Its run state.</summary>
    public DomainState State { get; internal set; } = DomainState.ShutOff;

    /// <summary>Its disks.</summary>
    public IReadOnlyList<SimDisk> Disks => _disks;

    /// <summary>The capture in progress (or broken and not yet released), if any.</summary>
    public string? CaptureId => Capture?.Id;

    /// <summary>The restore export open, if any.</summary>
    public string? RestoreId => Restore?.Id;

    internal Dictionary<string, SimCheckpoint> Checkpoints { get; } = new(StringComparer.Ordinal);

    internal SimCapture? Capture { get; set; }

    internal (string Id, List<(string Export, SimLiveBackend Backend)> Exports)? Restore { get; set; }

    /// <summary>The disk with target <paramref name="target"/>.</summary>
    /// <param name="target">The target name.</param>
    /// <returns>The disk.</returns>
    public SimDisk Disk(string target) =>
        _disks.FirstOrDefault(d => d.Target == target) ?? throw new DiskNotFoundException(Id, target);

    /// <summary>The guest's writable NBD export of a disk (served while the domain runs).</summary>
    /// <param name="target">The target name.</param>
    /// <returns>The endpoint.</returns>
    public NbdUri GuestEndpoint(string target) => Host.Uri(GuestExportName(target));

    /// <summary>Starts the domain (guest exports up unless paused).</summary>
    /// <param name="paused">Start without running the guest.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task StartAsync(bool paused = false, CancellationToken cancellationToken = default) => LockedAsync(() => StartLocked(paused), cancellationToken);

    /// <summary>Resumes a paused domain.</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task ResumeAsync(CancellationToken cancellationToken = default) => LockedAsync(ResumeLocked, cancellationToken);

    /// <summary>Stops the domain cleanly (bitmaps are stored).</summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task DestroyAsync(CancellationToken cancellationToken = default) => LockedAsync(() => StopLocked(crashed: false), cancellationToken);

    /// <summary>
    /// Fault: the hypervisor process dies (F01, F21). Bitmaps stored by an earlier clean stop come back inconsistent,
    /// newer ones are lost; a capture in progress breaks.
    /// </summary>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task CrashAsync(CancellationToken cancellationToken = default) => LockedAsync(() => StopLocked(crashed: true), cancellationToken);

    /// <summary>
    /// Migrates the running domain to <paramref name="target"/> (F07, F08): a capture in progress breaks, checkpoint
    /// metadata stays behind (as with libvirt; the bitmaps travel with the shared storage).
    /// </summary>
    /// <param name="target">The destination host.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public async Task MigrateAsync(SimHost target, CancellationToken cancellationToken = default)
    {
        var source = Host;
        if (ReferenceEquals(source, target))
        {
            throw new ArgumentException($"Domain '{Name}' is already on host '{target.Name}'.", nameof(target));
        }

        var (first, second) = string.CompareOrdinal(source.Name, target.Name) < 0 ? (source, target) : (target, source);
        await first.Lock.WaitAsync(cancellationToken);
        try
        {
            await second.Lock.WaitAsync(cancellationToken);
            try
            {
                RequireState("migrate", DomainState.Running, DomainState.Paused);
                BreakCapture("the domain migrated");
                var wasRunning = State == DomainState.Running;
                RemoveGuestExports();
                Checkpoints.Clear();
                source.Detach(this);
                target.Attach(this);
                if (wasRunning)
                {
                    AddGuestExports();
                }

                source.Publish(this, DomainEventKind.Migrated, $"to host {target.Name}");
                target.Publish(this, DomainEventKind.Started, $"migrated from host {source.Name}");
            }
            finally
            {
                second.Lock.Release();
            }
        }
        finally
        {
            first.Lock.Release();
        }
    }

    /// <summary>Fault: the hypervisor loses a checkpoint's metadata; its bitmaps stay (F05).</summary>
    /// <param name="checkpoint">The checkpoint.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task LoseCheckpointMetadataAsync(string checkpoint, CancellationToken cancellationToken = default) =>
        LockedAsync(() => Checkpoints.Remove(checkpoint), cancellationToken);

    /// <summary>Another tool creates a checkpoint (metadata and bitmaps) on every qcow2 disk (F15).</summary>
    /// <param name="name">Its name (any, usually without Drydock's prefix).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task CreateForeignCheckpointAsync(string name, CancellationToken cancellationToken = default) =>
        LockedAsync(() =>
        {
            var disks = _disks.Where(d => d.SupportsCheckpoints).ToList();
            foreach (var disk in disks)
            {
                disk.AddBitmap(name);
            }

            Checkpoints[name] = new SimCheckpoint(name, Host.Fleet.Options.TimeProvider.GetUtcNow(), null, [.. disks.Select(d => new CheckpointDisk(d.Target, name))]);
        }, cancellationToken);

    /// <summary>Fault: a bitmap disappears from a disk (image converted or restored elsewhere; F06).</summary>
    /// <param name="target">The disk.</param>
    /// <param name="bitmap">The bitmap.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task RemoveBitmapAsync(string target, string bitmap, CancellationToken cancellationToken = default) =>
        LockedAsync(() => Disk(target).RemoveBitmap(bitmap), cancellationToken);

    /// <summary>Fault: a bitmap becomes inconsistent (F01) without the domain stopping.</summary>
    /// <param name="target">The disk.</param>
    /// <param name="bitmap">The bitmap.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public Task MarkBitmapInconsistentAsync(string target, string bitmap, CancellationToken cancellationToken = default) =>
        LockedAsync(() =>
        {
            var found = Disk(target).FindBitmap(bitmap) ?? throw new CheckpointNotFoundException(Id, bitmap, target);
            found.Inconsistent = true;
            found.Recording = false;
            return true;
        }, cancellationToken);

    /// <summary>Fault: the disk grows (F09). New space reads as zeroes; bitmaps grow clean.</summary>
    /// <param name="target">The disk.</param>
    /// <param name="newSize">The new size (larger, a multiple of 512).</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public async Task ResizeDiskAsync(string target, ulong newSize, CancellationToken cancellationToken = default)
    {
        await Host.Lock.WaitAsync(cancellationToken);
        try
        {
            var disk = Disk(target);
            if (newSize <= disk.Size || newSize % 512 != 0)
            {
                throw new ArgumentOutOfRangeException(nameof(newSize), newSize, $"Disk '{target}' can only grow, to a multiple of 512 bytes (it has {disk.Size}).");
            }

            RequireNoCapture();
            var grown = await Host.Fleet.ResizeStorageAsync(disk.Storage, newSize, cancellationToken);
            await disk.SwapStorageAsync(grown, newImage: false, contentChangedBehindBitmaps: false, cancellationToken);
            Host.Publish(this, DomainEventKind.DiskChanged, string.Create(CultureInfo.InvariantCulture, $"resized to {newSize} bytes"), target);
        }
        finally
        {
            Host.Lock.Release();
        }
    }

    /// <summary>Hot-plugs a new, empty disk (F11): the guest sees it at once while the domain runs.</summary>
    /// <param name="target">Its target name (not in use).</param>
    /// <param name="size">Its size (a positive multiple of 512).</param>
    /// <param name="format">qcow2 (checkpoints) or raw.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>The disk.</returns>
    public Task<SimDisk> AttachDiskAsync(string target, ulong size, string format = DiskFormats.Qcow2, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(target);
        if (size == 0 || size % 512 != 0 || format is not (DiskFormats.Qcow2 or DiskFormats.Raw))
        {
            throw new ArgumentException($"Disk '{target}': size must be a positive multiple of 512 and the format qcow2 or raw.", nameof(size));
        }

        return LockedAsync(
            () =>
            {
                if (_disks.Any(d => d.Target == target))
                {
                    throw new ArgumentException($"Domain '{Name}' already has a disk '{target}'.", nameof(target));
                }

                RequireNoCapture();
                var identity = Host.Fleet.NewIdentity();
                var disk = new SimDisk(this, target, format, Host.Fleet.CreateStorage(identity, size), identity);
                _disks.Add(disk);
                if (State is DomainState.Running or DomainState.Paused)
                {
                    AddGuestExport(disk);
                }

                Host.Publish(this, DomainEventKind.DiskChanged, "attached", target);
                return disk;
            },
            cancellationToken);
    }

    /// <summary>Hot-unplugs a disk (F11) and deletes its image; its bitmaps go with it.</summary>
    /// <param name="target">The disk.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public async Task DetachDiskAsync(string target, CancellationToken cancellationToken = default)
    {
        var storage = await LockedAsync(
            () =>
            {
                var disk = Disk(target);
                RequireNoCapture();
                var name = GuestExportName(target);
                foreach (var (export, backend) in _guestExports.Where(e => e.Export == name).ToList())
                {
                    Host.Server.RemoveExport(export);
                    backend.Close();
                    _guestExports.Remove((export, backend));
                }

                _disks.Remove(disk);
                Host.Publish(this, DomainEventKind.DiskChanged, "detached", target);
                return disk.Storage;
            },
            cancellationToken);

        // Nothing reaches the disk any more: its image is closed and deleted outside the host's lock.
        await storage.DisposeAsync();
        if (storage is NbdFileBackend file)
        {
            File.Delete(file.Path);
        }
    }

    /// <summary>Fault: another (empty) image replaces the disk under the same target (F10).</summary>
    /// <param name="target">The disk.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public async Task ReplaceDiskAsync(string target, CancellationToken cancellationToken = default)
    {
        await Host.Lock.WaitAsync(cancellationToken);
        try
        {
            var disk = Disk(target);
            RequireNoCapture();
            var old = disk.Storage as NbdFileBackend;
            await disk.SwapStorageAsync(Host.Fleet.CreateStorage(Host.Fleet.NewIdentity(), disk.Size), newImage: true, contentChangedBehindBitmaps: true, cancellationToken);
            if (old is not null)
            {
                File.Delete(old.Path);
            }

            Host.Publish(this, DomainEventKind.DiskChanged, "image replaced", target);
        }
        finally
        {
            Host.Lock.Release();
        }
    }

    /// <summary>
    /// Fault: the disk's content goes back in time behind the bitmaps' back (snapshot revert, storage rollback; F13):
    /// to <paramref name="image"/>, or to all zeroes. The generation grows; the bitmaps record nothing.
    /// </summary>
    /// <param name="target">The disk.</param>
    /// <param name="image">Content saved earlier with <see cref="SimDisk.SaveImageAsync"/>, or null.</param>
    /// <param name="cancellationToken">Cancels the call.</param>
    /// <returns>A task.</returns>
    public async Task RevertDiskAsync(string target, SimDiskImage? image = null, CancellationToken cancellationToken = default)
    {
        await Host.Lock.WaitAsync(cancellationToken);
        try
        {
            var disk = Disk(target);
            RequireNoCapture();
            await disk.RevertAsync(image, cancellationToken);
            Host.Publish(this, DomainEventKind.Reverted, image is null ? "reverted to an empty disk" : "reverted to a saved image", target);
        }
        finally
        {
            Host.Lock.Release();
        }
    }

    /// <summary>Runs <paramref name="operations"/> guest operations of <paramref name="workload"/> on the running domain.</summary>
    /// <param name="workload">The generator.</param>
    /// <param name="operations">How many.</param>
    /// <param name="cancellationToken">Cancels the run.</param>
    /// <returns>What was done, in order.</returns>
    public async Task<IReadOnlyList<SimGuestOperation>> RunWorkloadAsync(SimWorkload workload, int operations, CancellationToken cancellationToken = default)
    {
        if (State != DomainState.Running)
        {
            throw new DomainStateException(Id, State, "run the guest workload");
        }

        var done = new List<SimGuestOperation>(operations);
        foreach (var operation in workload.Next(this, operations))
        {
            await operation.ApplyAsync(Disk(operation.Target), cancellationToken);
            done.Add(operation);
        }

        return done;
    }

    internal void AddDisk(SimDisk disk) => _disks.Add(disk);

    internal string GuestExportName(string target) => $"{Name}-{target}";

    internal async Task<T> LockedAsync<T>(Func<T> action, CancellationToken cancellationToken)
    {
        var host = Host;
        await host.Lock.WaitAsync(cancellationToken);
        try
        {
            return action();
        }
        finally
        {
            host.Lock.Release();
        }
    }

    internal Task LockedAsync(Action action, CancellationToken cancellationToken) => LockedAsync(() =>
    {
        action();
        return true;
    }, cancellationToken);

    internal void RequireState(string operation, params DomainState[] allowed)
    {
        if (!allowed.Contains(State))
        {
            throw new DomainStateException(Id, State, operation);
        }
    }

    internal void StartLocked(bool paused)
    {
        RequireState("start the domain", DomainState.ShutOff, DomainState.Crashed);
        State = paused ? DomainState.Paused : DomainState.Running;
        Host.Publish(this, DomainEventKind.Started, paused ? "paused" : null);
        if (!paused)
        {
            AddGuestExports();
            Host.Publish(this, DomainEventKind.Resumed, "guest running");
        }
    }

    internal void ResumeLocked()
    {
        RequireState("resume the domain", DomainState.Paused);
        State = DomainState.Running;
        AddGuestExports();
        Host.Publish(this, DomainEventKind.Resumed, null);
    }

    internal void StopLocked(bool crashed)
    {
        RequireState(crashed ? "crash the domain" : "destroy the domain", DomainState.Running, DomainState.Paused);
        BreakCapture(crashed ? "the domain crashed" : "the domain stopped");
        CloseRestore();
        RemoveGuestExports();
        foreach (var disk in _disks)
        {
            foreach (var bitmap in disk.Bitmaps)
            {
                if (!crashed)
                {
                    bitmap.Stored = true;
                }
                else if (bitmap.Stored)
                {
                    bitmap.Inconsistent = true;
                    bitmap.Recording = false;
                }
                else
                {
                    disk.RemoveBitmap(bitmap.Name);
                }
            }
        }

        State = crashed ? DomainState.Crashed : DomainState.ShutOff;
        Host.Publish(this, crashed ? DomainEventKind.Crashed : DomainEventKind.Stopped, crashed ? "the hypervisor process died" : "destroyed");
    }

    /// <summary>Ends a capture's reads (its exports go, its snapshots close) but keeps its record for release.</summary>
    internal void BreakCapture(string reason)
    {
        if (Capture is not { } capture)
        {
            return;
        }

        foreach (var (disk, snapshot, export) in capture.Disks)
        {
            snapshot.Closed = true;
            if (ReferenceEquals(disk.Snapshot, snapshot))
            {
                disk.Snapshot = null;
            }

            capture.Host.Server.RemoveExport(export);
        }

        capture.Host.Publish(this, DomainEventKind.CaptureBroken, reason, captureId: capture.Id);
    }

    internal void CloseRestore()
    {
        if (Restore is not { } restore)
        {
            return;
        }

        foreach (var (export, backend) in restore.Exports)
        {
            Host.Server.RemoveExport(export);
            backend.Close();
        }

        Restore = null;
    }

    private void RequireNoCapture()
    {
        if (Capture is { } capture)
        {
            throw new DomainBusyException(Id, capture.Id);
        }
    }

    private void AddGuestExports()
    {
        foreach (var disk in _disks)
        {
            AddGuestExport(disk);
        }
    }

    private void AddGuestExport(SimDisk disk)
    {
        var backend = new SimLiveBackend(disk);
        var name = GuestExportName(disk.Target);
        Host.Server.AddExport(new NbdExport(name, backend, description: $"guest disk {disk.Target} of {Name}"));
        _guestExports.Add((name, backend));
    }

    private void RemoveGuestExports()
    {
        foreach (var (export, backend) in _guestExports)
        {
            Host.Server.RemoveExport(export);
            backend.Close();
        }

        _guestExports.Clear();
    }
}
