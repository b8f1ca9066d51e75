using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Nbd.Protocol;
using Drydock.Nbd.Server;

namespace Drydock.Hypervisor.Sim;

/// <summary>
/// The driver of a simulated host: what Drydock sees of <see cref="SimHost"/>. Captures are exact copy-on-write
/// snapshots taken with every captured disk's changes held off, so the point in time and the changed-block
/// bitmaps (frozen at that instant) are exact. Checkpoints keep libvirt's split of metadata and bitmaps (metadata
/// can be lost and redefined), with every bitmap recording as in the QEMU driver.
/// </summary>
public sealed class SimDriver : IHypervisorDriver
{
    /// <summary>The driver's name.</summary>
    public const string DriverName = "sim";

    private readonly SimHost _host;
    private readonly string _instance = DrydockNames.RandomSuffix();

    internal SimDriver(SimHost host) => _host = host;

    /// <inheritdoc/>
    public string HostName => _host.Name;

    /// <inheritdoc/>
    public HypervisorCapabilities Capabilities { get; } = new()
    {
        Driver = DriverName,
        Checkpoints = true,
        CheckpointMetadata = true,
        DifferentialCaptures = true,
        RestoreExports = true,
        Lifecycle = true,
        Events = true,
        DiskGenerations = true,
    };

    private TimeProvider Time => _host.Fleet.Options.TimeProvider;

    /// <inheritdoc/>
    public Task<IReadOnlyList<DomainInfo>> ListDomainsAsync(CancellationToken cancellationToken = default) =>
        Task.FromResult<IReadOnlyList<DomainInfo>>([.. _host.Domains.Select(Describe)]);

    /// <inheritdoc/>
    public Task<DomainInfo> GetDomainAsync(string domainId, CancellationToken cancellationToken = default) =>
        Task.FromResult(Describe(Find(domainId)));

    /// <inheritdoc/>
    public Task<DomainDefinition> GetDefinitionAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var json = new JsonObject
        {
            ["id"] = domain.Id,
            ["name"] = domain.Name,
            ["host"] = _host.Name,
            ["disks"] = new JsonArray([.. domain.Disks.Select(d => (JsonNode)new JsonObject
            {
                ["target"] = d.Target,
                ["format"] = d.Format,
                ["size"] = d.Size,
                ["identity"] = d.Identity,
            })]),
        };
        return Task.FromResult(new DomainDefinition(DomainDefinition.SimJson, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true })));
    }

    /// <inheritdoc/>
    public async Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default)
    {
        var domain = Find(request.DomainId);
        if (request.Disks.Count == 0 || request.Disks.Select(d => d.Target).Distinct(StringComparer.Ordinal).Count() != request.Disks.Count)
        {
            throw new ArgumentException($"A capture of domain '{domain.Id}' needs at least one disk, each once.", nameof(request));
        }

        foreach (var disk in request.Disks)
        {
            domain.Disk(disk.Target);
            if (disk.SinceCheckpoint is { } since && !DrydockNames.IsOwned(since))
            {
                throw new ForeignCheckpointException(domain.Id, since);
            }
        }

        if (request.NewCheckpoint is { } newCheckpoint)
        {
            DrydockNames.ValidateOwnedCheckpoint(domain.Id, newCheckpoint);
        }

        await _host.Lock.WaitAsync(cancellationToken);
        try
        {
            domain.RequireState("begin a capture", DomainState.Running, DomainState.Paused);
            if (domain.Capture is { } running)
            {
                throw new DomainBusyException(domain.Id, running.Id);
            }

            var plan = Plan(domain, request);
            return await CaptureLockedAsync(domain, request, plan, cancellationToken);
        }
        finally
        {
            _host.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default)
    {
        var domains = domainId is null ? _host.Domains : [Find(domainId)];
        return Task.FromResult<IReadOnlyList<CaptureSummary>>([.. domains.Where(d => d.Capture is not null).Select(d => new CaptureSummary
        {
            Id = d.Capture!.Id,
            DomainId = d.Id,
            Targets = [.. d.Capture.Disks.Select(c => c.Disk.Target)],
            NewCheckpoint = d.Capture.NewCheckpoint,
            CapturedAt = d.Capture.CapturedAt,
            StartedByThisDriver = d.Capture.StartedBy == _instance,
        })]);
    }

    /// <inheritdoc/>
    public async Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        await _host.Lock.WaitAsync(cancellationToken);
        try
        {
            if (domain.Capture is not { } capture || capture.Id != captureId)
            {
                return false;
            }

            foreach (var (disk, snapshot, export) in capture.Disks)
            {
                capture.Host.Server.RemoveExport(export);
                await disk.WithChangesHeldAsync(() =>
                {
                    snapshot.Closed = true;
                    if (ReferenceEquals(disk.Snapshot, snapshot))
                    {
                        disk.Snapshot = null;
                    }

                    return true;
                }, cancellationToken);
            }

            if (outcome == CaptureOutcome.Abandoned && capture.NewCheckpoint is { } checkpoint)
            {
                RemoveCheckpoint(domain, checkpoint, metadataOnly: false);
            }

            domain.Capture = null;
            return true;
        }
        finally
        {
            _host.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<CheckpointInfo>> ListCheckpointsAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        return domain.LockedAsync<IReadOnlyList<CheckpointInfo>>(() =>
        {
            var list = domain.Checkpoints.Values.Select(c => new CheckpointInfo
            {
                Name = c.Name,
                DomainId = domain.Id,
                CreatedAt = c.CreatedAt,
                Parent = c.Parent,
                Disks = c.Disks,
                HasMetadata = true,
            }).ToList();
            foreach (var name in domain.Disks.SelectMany(d => d.Bitmaps).Select(b => b.Name).Distinct(StringComparer.Ordinal))
            {
                if (!domain.Checkpoints.ContainsKey(name))
                {
                    list.Add(new CheckpointInfo
                    {
                        Name = name,
                        DomainId = domain.Id,
                        Disks = [.. domain.Disks.Where(d => d.FindBitmap(name) is not null).Select(d => new CheckpointDisk(d.Target, name))],
                        HasMetadata = false,
                    });
                }
            }

            return [.. list.OrderBy(c => c.CreatedAt ?? DateTimeOffset.MaxValue).ThenBy(c => c.Name, StringComparer.Ordinal)];
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<string> GetCheckpointXmlAsync(string domainId, string checkpoint, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var info = (await ListCheckpointsAsync(domainId, cancellationToken)).FirstOrDefault(c => c.Name == checkpoint)
            ?? throw new CheckpointNotFoundException(domainId, checkpoint);
        return CheckpointXml.Format(new CheckpointDocument
        {
            Name = info.Name,
            CreationTime = info.CreatedAt,
            Parent = info.Parent,
            Description = "drydock sim",
            Disks = [.. domain.Disks.Select(d => new CheckpointDocumentDisk(d.Target, info.Disks.FirstOrDefault(cd => cd.Target == d.Target)?.Bitmap))],
        });
    }

    /// <inheritdoc/>
    public async Task<CheckpointInfo> CreateCheckpointAsync(string domainId, string checkpoint, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        DrydockNames.ValidateOwnedCheckpoint(domainId, checkpoint);
        var disks = (targets ?? [.. domain.Disks.Select(d => d.Target)]).Select(domain.Disk).Where(d => d.SupportsCheckpoints).ToList();
        if (disks.Count == 0)
        {
            throw new HypervisorNotSupportedException("checkpoints on disks that are not qcow2", DriverName, domainId);
        }

        await _host.Lock.WaitAsync(cancellationToken);
        try
        {
            domain.RequireState("create a checkpoint", DomainState.Running, DomainState.Paused);
            RequireFree(domain, checkpoint);
            await AtInstantAsync(disks, () => AddCheckpoint(domain, checkpoint, disks), cancellationToken);
            return Info(domain, domain.Checkpoints[checkpoint]);
        }
        finally
        {
            _host.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<CheckpointInfo> RedefineCheckpointAsync(string domainId, string checkpointXml, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        CheckpointDocument document;
        try
        {
            document = CheckpointXml.Parse(checkpointXml);
        }
        catch (FormatException ex)
        {
            throw new HypervisorException($"Cannot redefine a checkpoint on domain '{domainId}': {ex.Message}", domainId, innerException: ex);
        }

        DrydockNames.ValidateOwnedCheckpoint(domainId, document.Name);
        await _host.Lock.WaitAsync(cancellationToken);
        try
        {
            // Validation as libvirt's REDEFINE_VALIDATE: every bitmap the XML names exists and is usable.
            foreach (var disk in document.BitmapDisks)
            {
                var simDisk = domain.Disks.FirstOrDefault(d => d.Target == disk.Target)
                    ?? throw new CheckpointInconsistentException(domainId, document.Name, disk.Target, $"the domain has no disk '{disk.Target}'");
                var bitmap = simDisk.FindBitmap(disk.Bitmap)
                    ?? throw new CheckpointInconsistentException(domainId, document.Name, disk.Target, $"bitmap '{disk.Bitmap}' is missing");
                if (bitmap.Inconsistent)
                {
                    throw new CheckpointInconsistentException(domainId, document.Name, disk.Target, $"bitmap '{disk.Bitmap}' is inconsistent");
                }
            }

            var metadata = new SimCheckpoint(document.Name, document.CreationTime ?? Time.GetUtcNow(), document.Parent, document.BitmapDisks);
            domain.Checkpoints[document.Name] = metadata;
            return Info(domain, metadata);
        }
        finally
        {
            _host.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task DeleteCheckpointAsync(string domainId, string checkpoint, CheckpointDeleteMode mode = CheckpointDeleteMode.All, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        if (!DrydockNames.IsOwned(checkpoint))
        {
            throw new ForeignCheckpointException(domainId, checkpoint);
        }

        await _host.Lock.WaitAsync(cancellationToken);
        try
        {
            if (!domain.Checkpoints.ContainsKey(checkpoint) && !domain.Disks.Any(d => d.FindBitmap(checkpoint) is not null))
            {
                throw new CheckpointNotFoundException(domainId, checkpoint);
            }

            if (domain.Capture is { } capture && capture.NewCheckpoint == checkpoint)
            {
                throw new DomainBusyException(domainId, capture.Id, $"checkpoint '{checkpoint}' belongs to a running capture");
            }

            RemoveCheckpoint(domain, checkpoint, mode == CheckpointDeleteMode.MetadataOnly);
        }
        finally
        {
            _host.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<DiskHealth>> GetDiskHealthAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        return domain.LockedAsync<IReadOnlyList<DiskHealth>>(() => [.. domain.Disks.Select(d => new DiskHealth
        {
            Target = d.Target,
            Identity = d.Identity,
            VirtualSize = d.Size,
            Generation = d.Generation,
            SupportsCheckpoints = d.SupportsCheckpoints,
            Bitmaps = [.. d.Bitmaps.Select(b => new BitmapHealth
            {
                Checkpoint = b.Name,
                Bitmap = b.Name,
                Recording = b.Recording,
                Inconsistent = b.Inconsistent,
                Persistent = true,
                Granularity = b.Granularity,
                DirtyBytes = (long)b.DirtyBytes,
                Usable = !b.Inconsistent && b.Recording,
                Problem = b.Inconsistent ? "inconsistent: the domain stopped uncleanly while the bitmap was in use" : b.Recording ? null : "not recording",
            })],
        })], cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        await _host.Lock.WaitAsync(cancellationToken);
        try
        {
            domain.RequireState("open a restore export", DomainState.Paused);
            if (domain.Capture is { } capture)
            {
                throw new DomainBusyException(domainId, capture.Id);
            }

            domain.CloseRestore();
            var id = DrydockNames.RandomSuffix();
            var exports = new List<(string Export, SimLiveBackend Backend)>();
            var disks = new List<RestoreExportDisk>();
            foreach (var disk in (targets ?? [.. domain.Disks.Select(d => d.Target)]).Select(domain.Disk))
            {
                var name = $"{domain.Name}-{disk.Target}-restore-{id}";
                var backend = new SimLiveBackend(disk);
                _host.Server.AddExport(new NbdExport(name, backend, description: $"restore of {disk.Target}"));
                exports.Add((name, backend));
                disks.Add(new RestoreExportDisk(disk.Target, _host.Uri(name), disk.Size));
            }

            domain.Restore = (id, exports);
            return new RestoreExport { Id = id, DomainId = domainId, Disks = disks };
        }
        finally
        {
            _host.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        return domain.LockedAsync(() =>
        {
            if (domain.Restore?.Id != exportId)
            {
                return false;
            }

            domain.CloseRestore();
            return true;
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default) =>
        Find(domainId).StartAsync(paused, cancellationToken);

    /// <inheritdoc/>
    public Task ResumeAsync(string domainId, CancellationToken cancellationToken = default) =>
        Find(domainId).ResumeAsync(cancellationToken);

    /// <inheritdoc/>
    public Task DestroyAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        return domain.State is DomainState.ShutOff or DomainState.Crashed ? Task.CompletedTask : domain.DestroyAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public IAsyncEnumerable<DomainEvent> WatchEventsAsync(CancellationToken cancellationToken = default) => _host.Events.Subscribe(cancellationToken);

    /// <summary>Nothing to close: the state lives in the fleet.</summary>
    /// <returns>A completed task.</returns>
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private static DomainInfo Describe(SimDomain domain) => new()
    {
        Id = domain.Id,
        Name = domain.Name,
        HostName = domain.Host.Name,
        State = domain.State,
        Disks = [.. domain.Disks.Select(d => new DiskInfo
        {
            Target = d.Target,
            Source = d.Storage is NbdFileBackend file ? file.Path : "memory:" + d.Identity,
            Format = d.Format,
            VirtualSize = d.Size,
            Identity = d.Identity,
            Generation = d.Generation,
            SupportsCheckpoints = d.SupportsCheckpoints,
            CheckpointsUnsupportedReason = d.SupportsCheckpoints ? null : $"the {d.Format} format cannot store bitmaps",
        })],
    };

    private static CheckpointInfo Info(SimDomain domain, SimCheckpoint checkpoint) => new()
    {
        Name = checkpoint.Name,
        DomainId = domain.Id,
        CreatedAt = checkpoint.CreatedAt,
        Parent = checkpoint.Parent,
        Disks = checkpoint.Disks,
        HasMetadata = true,
    };

    private static void RequireFree(SimDomain domain, string checkpoint)
    {
        if (domain.Checkpoints.ContainsKey(checkpoint))
        {
            throw new CheckpointExistsException(domain.Id, checkpoint);
        }

        if (domain.Disks.FirstOrDefault(d => d.FindBitmap(checkpoint) is not null) is { } disk)
        {
            throw new CheckpointExistsException(domain.Id, checkpoint, disk.Target, $"Bitmap already exists: {checkpoint}");
        }
    }

    private static void RemoveCheckpoint(SimDomain domain, string checkpoint, bool metadataOnly)
    {
        domain.Checkpoints.Remove(checkpoint);
        if (!metadataOnly)
        {
            foreach (var disk in domain.Disks)
            {
                disk.RemoveBitmap(checkpoint);
            }
        }
    }

    /// <summary>Runs <paramref name="action"/> with changes to every disk in <paramref name="disks"/> held off.</summary>
    private static async Task AtInstantAsync(IReadOnlyList<SimDisk> disks, Action action, CancellationToken cancellationToken)
    {
        var held = new List<SimDisk>();
        try
        {
            foreach (var disk in disks.OrderBy(d => d.Target, StringComparer.Ordinal))
            {
                await disk.HoldChangesAsync(cancellationToken);
                held.Add(disk);
            }

            action();
        }
        finally
        {
            foreach (var disk in held)
            {
                disk.ReleaseChanges();
            }
        }
    }

    private SimDomain Find(string domainId) => _host.Find(domainId) ?? throw new DomainNotFoundException(domainId, _host.Name);

    private void AddCheckpoint(SimDomain domain, string checkpoint, IReadOnlyList<SimDisk> disks)
    {
        foreach (var disk in disks)
        {
            disk.AddBitmap(checkpoint);
        }

        var parent = domain.Checkpoints.Values.OrderByDescending(c => c.CreatedAt).FirstOrDefault()?.Name;
        domain.Checkpoints[checkpoint] = new SimCheckpoint(checkpoint, Time.GetUtcNow(), parent, [.. disks.Select(d => new CheckpointDisk(d.Target, checkpoint))]);
    }

    private List<DiskPlan> Plan(SimDomain domain, CaptureRequest request)
    {
        if (request.NewCheckpoint is { } checkpoint)
        {
            RequireFree(domain, checkpoint);
        }

        var plan = new List<DiskPlan>();
        foreach (var wanted in request.Disks)
        {
            var disk = domain.Disk(wanted.Target);
            SimBitmap? baseBitmap = null;
            var reason = FullReadReason.NotRequested;
            if (wanted.SinceCheckpoint is { } since)
            {
                baseBitmap = disk.FindBitmap(since);
                FullReadReason? problem =
                    !disk.SupportsCheckpoints ? new(FullReadCode.CheckpointsUnsupported, $"Disk '{disk.Target}' is {disk.Format}: it cannot carry checkpoints.")
                    : !domain.Checkpoints.ContainsKey(since) ? new(FullReadCode.CheckpointMissing, $"Checkpoint '{since}' is not defined on domain '{domain.Id}'.")
                    : baseBitmap is null ? new(FullReadCode.BitmapMissing, $"Disk '{disk.Target}' has no bitmap '{since}'.")
                    : baseBitmap.Inconsistent ? new(FullReadCode.BitmapInconsistent, $"Bitmap '{since}' on disk '{disk.Target}' is inconsistent.")
                    : null;
                if (problem is not null)
                {
                    if (!request.FallBackToFull)
                    {
                        throw problem.Code == FullReadCode.BitmapInconsistent
                            ? new CheckpointInconsistentException(domain.Id, since, disk.Target, problem.Message)
                            : new CheckpointNotFoundException(domain.Id, since, problem.Code == FullReadCode.CheckpointMissing ? null : disk.Target);
                    }

                    baseBitmap = null;
                    reason = problem;
                }
            }

            plan.Add(new DiskPlan(disk, wanted.SinceCheckpoint, baseBitmap, reason, request.NewCheckpoint is not null && disk.SupportsCheckpoints));
        }

        return plan;
    }

    private async Task<Capture> CaptureLockedAsync(SimDomain domain, CaptureRequest request, List<DiskPlan> plan, CancellationToken cancellationToken)
    {
        var id = DrydockNames.RandomSuffix();
        var budget = new SimFleeceBudget(_host.FleeceLimit);
        var capture = new SimCapture { Id = id, Host = _host, CapturedAt = Time.GetUtcNow(), NewCheckpoint = request.NewCheckpoint, StartedBy = _instance };
        var frozen = new Dictionary<SimDisk, SimBitmap>();

        // The instant: with every captured disk's changes held off, snapshot, freeze the bases, start the new checkpoint.
        await AtInstantAsync([.. plan.Select(p => p.Disk)], () =>
        {
            foreach (var disk in plan)
            {
                var snapshot = new SimDiskSnapshot(disk.Disk, budget, broken => _host.Publish(domain, DomainEventKind.CaptureBroken, "the fleece space ran out", broken.Disk.Target, id));
                disk.Disk.Snapshot = snapshot;
                capture.Disks.Add((disk.Disk, snapshot, $"{domain.Name}-{disk.Disk.Target}-cap-{id}"));
                if (disk.BaseBitmap is { } baseBitmap)
                {
                    frozen[disk.Disk] = baseBitmap.Copy("ddcap-" + id, disk.Disk.Size);
                }
            }

            if (request.NewCheckpoint is { } checkpoint && plan.Any(p => p.InNewCheckpoint))
            {
                AddCheckpoint(domain, checkpoint, [.. plan.Where(p => p.InNewCheckpoint).Select(p => p.Disk)]);
            }
        }, cancellationToken);

        domain.Capture = capture;
        var disks = new List<CaptureDisk>();
        for (var i = 0; i < plan.Count; i++)
        {
            var (disk, snapshot, exportName) = capture.Disks[i];
#pragma warning disable CA2000 // The backend holds no resources of its own; the export (and the server) own it.
            var export = new NbdExport(exportName, new SimSnapshotBackend(snapshot), readOnly: true, description: $"capture {id} of {disk.Target}");
#pragma warning restore CA2000
            string? context = null;
            if (frozen.TryGetValue(disk, out var bitmap))
            {
                var served = export.CreateBitmap(bitmap.Name, bitmap.Granularity, enabled: false);
                foreach (var (offset, length) in bitmap.DirtyRanges(disk.Size))
                {
                    served.MarkDirty(offset, length);
                }

                context = NbdContexts.DirtyBitmap(bitmap.Name);
            }

            _host.Server.AddExport(export);
            disks.Add(new CaptureDisk
            {
                Target = disk.Target,
                Endpoint = _host.Uri(exportName),
                VirtualSize = disk.Size,
                Identity = disk.Identity,
                Generation = disk.Generation,
                SinceCheckpoint = context is null ? null : plan[i].Since,
                ChangedBlocksContext = context,
                Granularity = context is null ? null : bitmap!.Granularity,
                FullReason = context is null ? plan[i].Reason : null,
                InNewCheckpoint = plan[i].InNewCheckpoint,
            });
        }

        return new Capture
        {
            Id = id,
            DomainId = domain.Id,
            HostName = _host.Name,
            CapturedAt = capture.CapturedAt,
            NewCheckpoint = request.NewCheckpoint,
            Disks = disks,
        };
    }

    private sealed record DiskPlan(SimDisk Disk, string? Since, SimBitmap? BaseBitmap, FullReadReason Reason, bool InNewCheckpoint);
}
