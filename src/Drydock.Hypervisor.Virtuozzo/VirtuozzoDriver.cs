using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using Drydock.Hypervisor.Virtuozzo.Xml;

namespace Drydock.Hypervisor.Virtuozzo;

/// <summary>
/// The Virtuozzo driver: captures through the Virtuozzo Hybrid Server X API in the order its documentation gives
/// (formatvzbackups): <c>virDomainBlockSnapshotXCreateXML</c> (a block snapshot with a fleece image per disk, optionally
/// creating a checkpoint whose id is the snapshot's name) → <c>virDomainBlockExportXStart</c> (NBD, read-only, per disk
/// the snapshot and the base checkpoint) → the backup reads → <c>virDomainBlockExportXStop</c> →
/// <c>virDomainBlockSnapshotXDelete</c>; an abandoned capture also removes its checkpoint
/// (<c>virDomainBlockCheckpointXRemove</c>). Restore: the domain started paused, a writable export of the live disks,
/// export stopped, then resume or destroy. Runs over any <see cref="IVirtuozzoBackupApi"/>.
/// </summary>
/// <remarks>
/// The capture id is the block snapshot's name (<c>drydock-…</c>: the new checkpoint's name when one is created, else
/// <c>drydock-cap-XXXXXXXX</c>), so captures left by a dead process are found again by listing snapshots (F03). The X API
/// keeps no checkpoint metadata apart from the bitmaps (<see cref="HypervisorCapabilities.CheckpointMetadata"/> false):
/// the domain XML's <c>x-checkpoint</c> elements are the ledger.
/// </remarks>
public sealed class VirtuozzoDriver : IHypervisorDriver
{
    /// <summary>The driver's name.</summary>
    public const string DriverName = "virtuozzo";

    private const string CapturePrefix = DrydockNames.Prefix + "cap-";
    private const string RestorePrefix = DrydockNames.Prefix + "rst-";

    private readonly IVirtuozzoBackupApi _api;
    private readonly VirtuozzoDriverOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ConcurrentDictionary<string, CaptureState> _captures = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (string DomainId, string Xml)> _restores = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _locks = new(StringComparer.Ordinal);

    /// <summary>Creates the driver over an X API backend.</summary>
    /// <param name="api">The backend (<see cref="NativeVirtuozzoBackupApi"/> on a Virtuozzo host).</param>
    /// <param name="options">Fleece directory and export address.</param>
    /// <param name="timeProvider">The clock.</param>
    public VirtuozzoDriver(IVirtuozzoBackupApi api, VirtuozzoDriverOptions options, TimeProvider? timeProvider = null)
    {
        _api = api;
        _options = options;
        _timeProvider = timeProvider ?? TimeProvider.System;
    }

    /// <inheritdoc/>
    public string HostName => _api.HostName;

    /// <inheritdoc/>
    public HypervisorCapabilities Capabilities { get; } = new()
    {
        Driver = DriverName,
        Checkpoints = true,
        CheckpointMetadata = false,
        DifferentialCaptures = true,
        RestoreExports = true,
        Lifecycle = true,
        Events = false,
    };

    /// <summary>Connects to the Virtuozzo host's libvirt through <see cref="NativeVirtuozzoBackupApi"/>.</summary>
    /// <exception cref="HypervisorNotSupportedException">This libvirt has no Virtuozzo backup API.</exception>
    public static async Task<VirtuozzoDriver> ConnectAsync(VirtuozzoDriverOptions options, TimeProvider? timeProvider = null, CancellationToken cancellationToken = default) =>
        new(await NativeVirtuozzoBackupApi.ConnectAsync(options, cancellationToken), options, timeProvider);

    /// <inheritdoc/>
    public async Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default) =>
        [.. (await _api.ListDomainsAsync(cancellationToken)).Select(Describe)];

    /// <inheritdoc/>
    public async Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) =>
        Describe(await _api.GetDomainAsync(domainId, cancellationToken));

    /// <inheritdoc/>
    public async Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default) =>
        new(DomainDefinition.LibvirtXml, (await _api.GetDomainAsync(domainId, cancellationToken)).Xml);

    /// <inheritdoc/>
    public async Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default)
    {
        Validate(request);
        var gate = _locks.GetOrAdd(request.DomainId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            var domain = await _api.GetDomainAsync(request.DomainId, cancellationToken);
            if (domain.State is not (DomainState.Running or DomainState.Paused))
            {
                throw new DomainStateException(domain.Uuid, domain.State, "begin a capture");
            }

            var running = (await _api.ListBlockSnapshotsAsync(domain.Uuid, cancellationToken)).FirstOrDefault(DrydockNames.IsOwned);
            if (running is not null)
            {
                throw new DomainBusyException(domain.Uuid, running, "A Drydock block snapshot exists on the domain.");
            }

            var xml = VzDomainXml.Parse(domain.Xml);
            var disks = request.Disks.Select(d => (Request: d, Disk: xml.FindDisk(d.Target) ?? throw new DiskNotFoundException(domain.Uuid, d.Target))).ToList();
            if (request.NewCheckpoint is { } newName && xml.Disks.Any(d => d.Checkpoints.Contains(newName)))
            {
                throw new CheckpointExistsException(domain.Uuid, newName);
            }

            var reasons = new Dictionary<string, FullReadReason>(StringComparer.Ordinal);
            foreach (var (diskRequest, disk) in disks)
            {
                if (diskRequest.SinceCheckpoint is { } since && BaseProblem(xml, disk, since) is { } reason)
                {
                    if (!request.FallBackToFull)
                    {
                        throw reason.Code == FullReadCode.BitmapMissing
                            ? new CheckpointNotFoundException(domain.Uuid, since, disk.Target, reason.Message)
                            : new CheckpointNotFoundException(domain.Uuid, since, hypervisorMessage: reason.Message);
                    }

                    reasons[disk.Target] = reason;
                }
            }

            var name = request.NewCheckpoint ?? CapturePrefix + DrydockNames.RandomSuffix();
            var snapshot = new BlockSnapshotXml(name, [.. disks.Select(d => new VzSnapshotDisk(d.Disk.Target, Path.Combine(_options.FleeceDirectory, $"{name}.{d.Disk.Target}.qcow2")))]);
            var export = new BlockExportXml(
                new VzExportAddress(_options.ExportHost, _options.ExportPort, Tls: _options.ExportTls ? true : null),
                [.. disks.Select(d => new VzExportDisk
                {
                    Name = d.Disk.Target,
                    ExportName = $"{name}-{d.Disk.Target}",
                    Snapshot = name,
                    Checkpoint = d.Request.SinceCheckpoint is { } since && !reasons.ContainsKey(d.Disk.Target) ? since : null,
                    ReadOnly = true,
                })]);
            var capturedAt = _timeProvider.GetUtcNow();
            await _api.CreateBlockSnapshotAsync(domain.Uuid, snapshot.Format(), request.NewCheckpoint is not null, cancellationToken);
            var state = new CaptureState(domain.Uuid, name, request.NewCheckpoint, export.Format(), [.. snapshot.Disks.Select(d => d.FleeceFile)]);
            _captures[name] = state;
            try
            {
                var endpoints = await _api.StartExportAsync(domain.Uuid, state.ExportXml, cancellationToken);
                state.Exported = true;
                var captureDisks = new List<CaptureDisk>();
                foreach (var (diskRequest, disk) in disks)
                {
                    var endpoint = endpoints.FirstOrDefault(e => e.Disk == disk.Target)
                        ?? throw new CaptureFailedException(domain.Uuid, $"The export of capture '{name}' reports no endpoint for disk '{disk.Target}'.", disk.Target);
                    // Never "nothing changed": an incremental disk whose export offers no changed-block context is read in full.
                    var asked = export.Disks.Single(d => d.Name == disk.Target).Checkpoint is not null;
                    var incremental = asked && endpoint.DirtyBitmapContext is not null;
                    if (asked && !incremental)
                    {
                        reasons[disk.Target] = new FullReadReason(FullReadCode.BitmapMissing, $"The export of disk '{disk.Target}' offers no changed blocks since '{diskRequest.SinceCheckpoint}'.");
                    }

                    captureDisks.Add(new CaptureDisk
                    {
                        Target = disk.Target,
                        Endpoint = endpoint.Endpoint,
                        VirtualSize = domain.DiskSizes.GetValueOrDefault(disk.Target),
                        Identity = Identity(disk),
                        SinceCheckpoint = incremental ? diskRequest.SinceCheckpoint : null,
                        ChangedBlocksContext = incremental ? endpoint.DirtyBitmapContext : null,
                        Granularity = incremental ? endpoint.Granularity ?? _options.DefaultGranularity : null,
                        FullReason = incremental ? null : diskRequest.SinceCheckpoint is null ? FullReadReason.NotRequested : reasons[disk.Target],
                        InNewCheckpoint = request.NewCheckpoint is not null && disk.Format == DiskFormats.Qcow2,
                    });
                }

                return new Capture { Id = name, DomainId = domain.Uuid, HostName = HostName, CapturedAt = capturedAt, NewCheckpoint = request.NewCheckpoint, Disks = captureDisks };
            }
            catch
            {
                await ReleaseCoreAsync(domain.Uuid, name, CaptureOutcome.Abandoned, CancellationToken.None);
                throw;
            }
        }
        finally
        {
            gate.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default)
    {
        var domains = domainId is null ? await _api.ListDomainsAsync(cancellationToken) : [await _api.GetDomainAsync(domainId, cancellationToken)];
        var result = new List<CaptureSummary>();
        foreach (var domain in domains)
        {
            foreach (var snapshot in (await _api.ListBlockSnapshotsAsync(domain.Uuid, cancellationToken)).Where(DrydockNames.IsOwned))
            {
                var mine = _captures.TryGetValue(snapshot, out var state);
                result.Add(new CaptureSummary
                {
                    Id = snapshot,
                    DomainId = domain.Uuid,
                    Targets = [.. BlockSnapshotXml.Parse(await _api.GetBlockSnapshotXmlAsync(domain.Uuid, snapshot, cancellationToken)).Disks.Select(d => d.Name)],
                    NewCheckpoint = state?.NewCheckpoint ?? (snapshot.StartsWith(CapturePrefix, StringComparison.Ordinal) ? null : snapshot),
                    StartedByThisDriver = mine,
                });
            }
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default)
    {
        var gate = _locks.GetOrAdd(domainId, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        try
        {
            return await ReleaseCoreAsync(domainId, captureId, outcome, cancellationToken);
        }
        finally
        {
            gate.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = await _api.GetDomainAsync(domainId, cancellationToken);
        var xml = VzDomainXml.Parse(domain.Xml);
        return [.. xml.Disks.SelectMany(d => d.Checkpoints.Select(c => (Checkpoint: c, d.Target)))
            .GroupBy(x => x.Checkpoint, StringComparer.Ordinal)
            .Select(g => new CheckpointInfo { Name = g.Key, DomainId = domain.Uuid, Disks = [.. g.Select(x => new CheckpointDisk(x.Target, g.Key))], HasMetadata = false })];
    }

    /// <inheritdoc/>
    public async Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default)
    {
        var info = (await ListCheckpointsAsync(domainId, cancellationToken)).FirstOrDefault(c => c.Name == checkpoint)
            ?? throw new CheckpointNotFoundException(domainId, checkpoint);
        var domain = VzDomainXml.Parse((await _api.GetDomainAsync(domainId, cancellationToken)).Xml);
        return CheckpointXml.Format(new CheckpointDocument
        {
            Name = checkpoint,
            Disks = [.. domain.Disks.Select(d => new CheckpointDocumentDisk(d.Target, info.Disks.Any(x => x.Target == d.Target) ? checkpoint : null))],
        });
    }

    /// <inheritdoc/>
    public async Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        DrydockNames.ValidateOwnedCheckpoint(domainId, checkpoint);
        var domain = await _api.GetDomainAsync(domainId, cancellationToken);
        var xml = VzDomainXml.Parse(domain.Xml);
        var disks = (targets ?? [.. xml.Disks.Where(d => d.Format == DiskFormats.Qcow2).Select(d => d.Target)])
            .Select(t => xml.FindDisk(t) ?? throw new DiskNotFoundException(domain.Uuid, t)).ToList();
        if (xml.Disks.Any(d => d.Checkpoints.Contains(checkpoint)))
        {
            throw new CheckpointExistsException(domain.Uuid, checkpoint);
        }

        // The X API creates checkpoints only with a block snapshot: create one with the checkpoint flag and drop it.
        var snapshot = new BlockSnapshotXml(checkpoint, [.. disks.Select(d => new VzSnapshotDisk(d.Target, Path.Combine(_options.FleeceDirectory, $"{checkpoint}.{d.Target}.qcow2")))]);
        await _api.CreateBlockSnapshotAsync(domain.Uuid, snapshot.Format(), createCheckpoint: true, cancellationToken);
        await _api.DeleteBlockSnapshotAsync(domain.Uuid, checkpoint, cancellationToken);
        DeleteFiles(snapshot.Disks.Select(d => d.FleeceFile));
        return new CheckpointInfo { Name = checkpoint, DomainId = domain.Uuid, CreatedAt = _timeProvider.GetUtcNow(), Disks = [.. disks.Select(d => new CheckpointDisk(d.Target, checkpoint))] };
    }

    /// <inheritdoc/>
    public async Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default)
    {
        // No metadata to redefine: validate that every bitmap the saved checkpoint names is still there.
        var document = CheckpointXml.Parse(checkpointXml);
        DrydockNames.ValidateOwnedCheckpoint(domainId, document.Name);
        var domain = await _api.GetDomainAsync(domainId, cancellationToken);
        var xml = VzDomainXml.Parse(domain.Xml);
        foreach (var disk in document.BitmapDisks)
        {
            if (xml.FindDisk(disk.Target) is not { } found || !found.Checkpoints.Contains(disk.Bitmap))
            {
                throw new CheckpointInconsistentException(domain.Uuid, document.Name, disk.Target, $"disk '{disk.Target}' has no checkpoint '{disk.Bitmap}'.");
            }
        }

        return new CheckpointInfo { Name = document.Name, DomainId = domain.Uuid, CreatedAt = document.CreationTime, Disks = document.BitmapDisks, HasMetadata = false };
    }

    /// <inheritdoc/>
    public async Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default)
    {
        if (!DrydockNames.IsOwned(checkpoint))
        {
            throw new ForeignCheckpointException(domainId, checkpoint);
        }

        if (!(await ListCheckpointsAsync(domainId, cancellationToken)).Any(c => c.Name == checkpoint))
        {
            throw new CheckpointNotFoundException(domainId, checkpoint);
        }

        if (mode == CheckpointDeleteMode.All)
        {
            await _api.RemoveCheckpointAsync(domainId, checkpoint, cancellationToken);
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = await _api.GetDomainAsync(domainId, cancellationToken);
        var xml = VzDomainXml.Parse(domain.Xml);
        return [.. xml.Disks.Select(d => new DiskHealth
        {
            Target = d.Target,
            Identity = Identity(d),
            VirtualSize = domain.DiskSizes.GetValueOrDefault(d.Target),
            SupportsCheckpoints = d.Format == DiskFormats.Qcow2,
            // The X API exposes only which checkpoints exist per disk, not their bitmaps' state.
            Bitmaps = [.. d.Checkpoints.Select(c => new BitmapHealth { Checkpoint = c, Bitmap = c, Persistent = true, Recording = true, Usable = true })],
        })];
    }

    /// <inheritdoc/>
    public async Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        var domain = await _api.GetDomainAsync(domainId, cancellationToken);
        if (domain.State is DomainState.ShutOff or DomainState.Crashed)
        {
            // The documented restore flow works on a domain started paused.
            await _api.StartAsync(domain.Uuid, paused: true, cancellationToken);
            domain = await _api.GetDomainAsync(domainId, cancellationToken);
        }

        if (domain.State != DomainState.Paused)
        {
            throw new DomainStateException(domain.Uuid, domain.State, "open a writable restore export");
        }

        var xml = VzDomainXml.Parse(domain.Xml);
        var disks = (targets ?? [.. xml.Disks.Select(d => d.Target)]).Select(t => xml.FindDisk(t) ?? throw new DiskNotFoundException(domain.Uuid, t)).ToList();
        var id = RestorePrefix + DrydockNames.RandomSuffix();
        var export = new BlockExportXml(
            new VzExportAddress(_options.ExportHost, _options.ExportPort, Tls: _options.ExportTls ? true : null),
            [.. disks.Select(d => new VzExportDisk { Name = d.Target, ExportName = $"{id}-{d.Target}", ReadOnly = false })]).Format();
        var endpoints = await _api.StartExportAsync(domain.Uuid, export, cancellationToken);
        _restores[id] = (domain.Uuid, export);
        return new RestoreExport
        {
            Id = id,
            DomainId = domain.Uuid,
            Disks = [.. disks.Select(d => new RestoreExportDisk(d.Target, endpoints.Single(e => e.Disk == d.Target).Endpoint, domain.DiskSizes.GetValueOrDefault(d.Target)))],
        };
    }

    /// <inheritdoc/>
    public async Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default)
    {
        if (!_restores.TryRemove(exportId, out var restore))
        {
            return false;
        }

        await _api.StopExportAsync(restore.DomainId, restore.Xml, cancellationToken);
        return true;
    }

    /// <inheritdoc/>
    public Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default) => _api.StartAsync(domainId, paused, cancellationToken);

    /// <inheritdoc/>
    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) => _api.ResumeAsync(domainId, cancellationToken);

    /// <inheritdoc/>
    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default) => _api.DestroyAsync(domainId, cancellationToken);

    /// <inheritdoc/>
    public async IAsyncEnumerable<DomainEvent> WatchEventsAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // The driver has no event source of its own (Capabilities.Events is false): the subscription stays empty.
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            yield break;
        }

        yield break;
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _api.DisposeAsync();
        foreach (var gate in _locks.Values)
        {
            gate.Dispose();
        }
    }

    private static void Validate(CaptureRequest request)
    {
        if (request.Disks.Count == 0 || request.Disks.Select(d => d.Target).Distinct(StringComparer.Ordinal).Count() != request.Disks.Count)
        {
            throw new ArgumentException($"A capture of domain '{request.DomainId}' needs distinct disks.", nameof(request));
        }

        if (request.NewCheckpoint is not null)
        {
            DrydockNames.ValidateOwnedCheckpoint(request.DomainId, request.NewCheckpoint);
        }

        foreach (var since in request.Disks.Select(d => d.SinceCheckpoint).OfType<string>())
        {
            DrydockNames.ValidateOwnedCheckpoint(request.DomainId, since);
        }
    }

    private static FullReadReason? BaseProblem(VzDomainXml xml, VzDomainDisk disk, string since)
    {
        if (disk.Format != DiskFormats.Qcow2)
        {
            return new FullReadReason(FullReadCode.CheckpointsUnsupported, $"Disk '{disk.Target}' is {disk.Format}: it cannot carry checkpoints.");
        }

        if (disk.Checkpoints.Contains(since))
        {
            return null;
        }

        return xml.Disks.Any(d => d.Checkpoints.Contains(since))
            ? new FullReadReason(FullReadCode.BitmapMissing, $"Disk '{disk.Target}' has no checkpoint '{since}'.")
            : new FullReadReason(FullReadCode.CheckpointMissing, $"Checkpoint '{since}' does not exist on domain '{xml.Uuid}'.");
    }

    private async Task<bool> ReleaseCoreAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken)
    {
        _captures.TryRemove(captureId, out var state);
        var domain = await _api.GetDomainAsync(domainId, cancellationToken);
        var exists = (await _api.ListBlockSnapshotsAsync(domain.Uuid, cancellationToken)).Contains(captureId);
        if (state is null && !exists)
        {
            return false;
        }

        var fleece = state?.FleeceFiles ?? [];
        if (exists)
        {
            var snapshot = BlockSnapshotXml.Parse(await _api.GetBlockSnapshotXmlAsync(domain.Uuid, captureId, cancellationToken));
            fleece = [.. snapshot.Disks.Select(d => d.FleeceFile)];
            var exported = VzDomainXml.Parse(domain.Xml).Disks.Where(d => d.Exports.Any(e => e.Snapshot == captureId)).Select(d => d.Target).ToList();
            if (state?.Exported == true || exported.Count > 0)
            {
                var stop = state?.ExportXml ?? new BlockExportXml(
                    new VzExportAddress(_options.ExportHost, _options.ExportPort),
                    [.. (exported.Count > 0 ? exported : [.. snapshot.Disks.Select(d => d.Name)]).Select(t => new VzExportDisk { Name = t, Snapshot = captureId })]).Format();
                await _api.StopExportAsync(domain.Uuid, stop, cancellationToken);
            }

            await _api.DeleteBlockSnapshotAsync(domain.Uuid, captureId, cancellationToken);
        }

        var checkpoint = state?.NewCheckpoint ?? (captureId.StartsWith(CapturePrefix, StringComparison.Ordinal) ? null : captureId);
        if (outcome == CaptureOutcome.Abandoned && checkpoint is not null
            && VzDomainXml.Parse((await _api.GetDomainAsync(domain.Uuid, cancellationToken)).Xml).Disks.Any(d => d.Checkpoints.Contains(checkpoint)))
        {
            await _api.RemoveCheckpointAsync(domain.Uuid, checkpoint, cancellationToken);
        }

        DeleteFiles(fleece);
        return true;
    }

    private static void DeleteFiles(IEnumerable<string> files)
    {
        foreach (var file in files)
        {
            try
            {
                File.Delete(file);
            }
            catch (IOException)
            {
                // The fleece image belongs to QEMU's user on the host; libvirt normally removes it with the snapshot.
            }
            catch (UnauthorizedAccessException)
            {
                // As above.
            }
        }
    }

    private DomainInfo Describe(VirtuozzoDomain domain)
    {
        var xml = VzDomainXml.Parse(domain.Xml);
        return new DomainInfo
        {
            Id = domain.Uuid,
            Name = domain.Name,
            HostName = HostName,
            State = domain.State,
            Disks = [.. xml.Disks.Select(d => new DiskInfo
            {
                Target = d.Target,
                Source = d.Source,
                Format = d.Format,
                VirtualSize = domain.DiskSizes.GetValueOrDefault(d.Target),
                Identity = Identity(d),
                SupportsCheckpoints = d.Format == DiskFormats.Qcow2,
                CheckpointsUnsupportedReason = d.Format == DiskFormats.Qcow2 ? null : $"{d.Format} images cannot carry checkpoints",
            })],
        };
    }

    private static string Identity(VzDomainDisk disk) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{disk.Format}|{disk.Source}|{disk.Target}")))[..32];

    private sealed class CaptureState(string domainId, string name, string? newCheckpoint, string exportXml, IReadOnlyList<string> fleeceFiles)
    {
        public string DomainId { get; } = domainId;

        public string Name { get; } = name;

        public string? NewCheckpoint { get; } = newCheckpoint;

        public string ExportXml { get; } = exportXml;

        public IReadOnlyList<string> FleeceFiles { get; } = fleeceFiles;

        public bool Exported { get; set; }
    }
}
