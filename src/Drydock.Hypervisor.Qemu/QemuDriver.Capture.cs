using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Hypervisor.Qemu.Qmp;
using Drydock.Nbd;
using Drydock.Nbd.Protocol;

namespace Drydock.Hypervisor.Qemu;

public sealed partial class QemuDriver
{
    /// <inheritdoc/>
    public async Task<Capture> BeginCaptureAsync(CaptureRequest request, CancellationToken cancellationToken = default)
    {
        var domain = Find(request.DomainId);
        var indexes = ValidateRequest(domain, request);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            var qmp = await ConnectOrThrowAsync(domain, "begin a capture", cancellationToken);
            IReadOnlyList<QemuBlockNode> nodes;
            QemuBlockGraph graph;
            try
            {
                nodes = await qmp.QueryNamedBlockNodesAsync(cancellationToken);
                graph = await qmp.QueryBlockGraphAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
            {
                throw Translate(ex, domain.Id, "inspect the block graph");
            }

            var running = domain.Captures.Keys.FirstOrDefault()
                ?? nodes.Select(n => CaptureNames.TryParse(n.NodeName, out var id, out _) ? id : null).FirstOrDefault(id => id is not null);
            if (running is not null)
            {
                throw new DomainBusyException(domain.Id, running);
            }

            var plan = PlanDisks(domain, request, indexes, nodes, graph);
            return await CreateCaptureAsync(domain, qmp, request, plan, cancellationToken);
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<CaptureSummary>> ListCapturesAsync(string? domainId = null, CancellationToken cancellationToken = default)
    {
        var domains = domainId is null ? [.. _domains.Values] : new[] { Find(domainId) };
        var list = new List<CaptureSummary>();
        foreach (var domain in domains)
        {
            foreach (var id in await FindCaptureIdsAsync(domain, cancellationToken))
            {
                var known = domain.Captures.GetValueOrDefault(id);
                var sidecar = ReadSidecar(domain, id);
                list.Add(new CaptureSummary
                {
                    Id = id,
                    DomainId = domain.Id,
                    Targets = known?.Disks.Select(d => d.Target).ToList() ?? sidecar?.Targets ?? [],
                    NewCheckpoint = known?.NewCheckpoint ?? sidecar?.NewCheckpoint,
                    CapturedAt = known?.CapturedAt ?? sidecar?.CapturedAt,
                    StartedByThisDriver = known is not null,
                });
            }
        }

        return list;
    }

    /// <inheritdoc/>
    public async Task<bool> ReleaseCaptureAsync(string domainId, string captureId, CaptureOutcome outcome, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        if (!CaptureNames.TryParse(CaptureNames.Export(captureId, 0), out _, out _))
        {
            throw new ArgumentException($"'{captureId}' is not a capture id of the QEMU driver.", nameof(captureId));
        }

        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            return await ReleaseLockedAsync(domain, captureId, outcome, cancellationToken);
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    private static int[] ValidateRequest(QemuDomain domain, CaptureRequest request)
    {
        if (request.Disks.Count == 0)
        {
            throw new ArgumentException($"A capture of domain '{domain.Id}' needs at least one disk.", nameof(request));
        }

        var indexes = new int[request.Disks.Count];
        for (var i = 0; i < request.Disks.Count; i++)
        {
            var disk = request.Disks[i];
            indexes[i] = domain.IndexOf(disk.Target);
            if (indexes[i] < 0)
            {
                throw new DiskNotFoundException(domain.Id, disk.Target);
            }

            if (request.Disks.Take(i).Any(d => d.Target == disk.Target))
            {
                throw new ArgumentException($"Disk '{disk.Target}' appears twice in the capture request for domain '{domain.Id}'.", nameof(request));
            }

            if (disk.SinceCheckpoint is { } since && !DrydockNames.IsOwned(since))
            {
                throw new ForeignCheckpointException(domain.Id, since);
            }
        }

        if (request.NewCheckpoint is { } checkpoint)
        {
            DrydockNames.ValidateOwnedCheckpoint(domain.Id, checkpoint);
        }

        return indexes;
    }

    private List<DiskPlan> PlanDisks(QemuDomain domain, CaptureRequest request, int[] indexes, IReadOnlyList<QemuBlockNode> nodes, QemuBlockGraph graph)
    {
        var plan = new List<DiskPlan>();
        for (var i = 0; i < request.Disks.Count; i++)
        {
            var wanted = request.Disks[i];
            var options = domain.Options.Disks[indexes[i]];
            var node = nodes.FirstOrDefault(n => n.NodeName == options.NodeName)
                ?? throw new CaptureFailedException(domain.Id, $"Domain '{domain.Id}' has no block node '{options.NodeName}' for disk '{wanted.Target}'.", wanted.Target);
            var front = nodes.FirstOrDefault(n => n.NodeName == options.FrontNodeName)
                ?? throw new CaptureFailedException(domain.Id, $"Domain '{domain.Id}' has no front node '{options.FrontNodeName}' for disk '{wanted.Target}'.", wanted.Target);
            if (front.Driver != "raw" || graph.ChildOf(front.NodeName, "file") != node.NodeName)
            {
                throw new CaptureFailedException(domain.Id,
                    $"Disk '{wanted.Target}' of domain '{domain.Id}': front node '{front.NodeName}' must be driver=raw with file='{node.NodeName}' (it is {front.Driver} over '{graph.ChildOf(front.NodeName, "file")}').", wanted.Target);
            }

            // The trap: a writer attached to the disk node directly bypasses the snapshot filter and silently changes the
            // "point in time". Refuse rather than produce a backup that is not one.
            var bypass = graph.ParentsOf(node.NodeName).Where(p => p.Edge.Writes && p.Parent.Name != front.NodeName).ToList();
            if (bypass.Count > 0)
            {
                throw new CaptureFailedException(domain.Id,
                    $"Disk '{wanted.Target}' of domain '{domain.Id}': {string.Join(", ", bypass.Select(p => QemuBlockGraph.Describe(p.Parent)))} writes to node '{node.NodeName}' directly, not through front node '{front.NodeName}'; its writes would bypass the snapshot.", wanted.Target);
            }

            var qcow2 = node.Driver == DiskFormats.Qcow2;
            if (request.NewCheckpoint is { } checkpoint && qcow2 && node.Bitmaps.Any(b => b.Name == checkpoint))
            {
                throw new CheckpointExistsException(domain.Id, checkpoint, wanted.Target, $"Bitmap already exists: {checkpoint}");
            }

            QemuBitmap? baseBitmap = null;
            FullReadReason? reason = FullReadReason.NotRequested;
            if (wanted.SinceCheckpoint is { } since)
            {
                baseBitmap = node.Bitmaps.FirstOrDefault(b => b.Name == since && b.Persistent);
                reason = null;
                if (!qcow2)
                {
                    reason = new FullReadReason(FullReadCode.CheckpointsUnsupported, $"Disk '{wanted.Target}' is {node.Driver}: it cannot carry checkpoints.");
                }
                else if (baseBitmap is null)
                {
                    var elsewhere = domain.Options.Disks.Any(d => nodes.FirstOrDefault(n => n.NodeName == d.NodeName)?.Bitmaps.Any(b => b.Name == since && b.Persistent) == true);
                    reason = elsewhere
                        ? new FullReadReason(FullReadCode.BitmapMissing, $"Disk '{wanted.Target}' has no bitmap '{since}'.")
                        : new FullReadReason(FullReadCode.CheckpointMissing, $"Checkpoint '{since}' does not exist on domain '{domain.Id}'.");
                }
                else if (baseBitmap.Inconsistent)
                {
                    reason = new FullReadReason(FullReadCode.BitmapInconsistent, $"Bitmap '{since}' on disk '{wanted.Target}' is inconsistent (the image was not closed cleanly).");
                }

                if (reason is not null)
                {
                    if (!request.FallBackToFull)
                    {
                        throw reason.Code == FullReadCode.BitmapInconsistent
                            ? new CheckpointInconsistentException(domain.Id, since, wanted.Target, reason.Message)
                            : new CheckpointNotFoundException(domain.Id, since, reason.Code == FullReadCode.CheckpointMissing ? null : wanted.Target);
                    }

                    Log.FullFallback(_logger, domain.Id, wanted.Target, reason.Message);
                    baseBitmap = null;
                }
            }

            plan.Add(new DiskPlan(indexes[i], options, node, wanted.SinceCheckpoint, baseBitmap, reason, request.NewCheckpoint is not null && qcow2));
        }

        return plan;
    }

    private async Task<Capture> CreateCaptureAsync(QemuDomain domain, QmpClient qmp, CaptureRequest request, List<DiskPlan> plan, CancellationToken cancellationToken)
    {
        var id = CaptureNames.NewId();
        var undo = new Stack<(string Step, Func<Task> Action)>();
        var step = "starting the NBD server";
        var capturedAt = _time.GetUtcNow();

        // A command that changes the block graph is awaited to its reply once sent (the QMP command timeout bounds it),
        // so its undo step is always recorded: cancellation is honoured between steps, never while one is in flight.
        try
        {
            await EnsureNbdServerAsync(domain, qmp, cancellationToken);

            step = "writing the capture's record";
            var fleeceDirectory = domain.HostPath(domain.Options.FleeceDirectory);
            Directory.CreateDirectory(fleeceDirectory);
            var sidecar = CaptureNames.Sidecar(fleeceDirectory, id);
            await WriteSidecarAsync(sidecar, domain, id, request.NewCheckpoint, plan, capturedAt, cancellationToken);
            undo.Push(("delete the capture's record", () => DeleteFileAsync(sidecar)));

            foreach (var disk in plan)
            {
                step = $"creating the fleece image of disk '{disk.Options.Target}'";
                var fleece = CaptureNames.FleeceFile(domain.Options.FleeceDirectory, id, disk.Index);
                var job = CaptureNames.Fleece(id, disk.Index) + "-mk";
                undo.Push(($"delete fleece file {fleece}", () => DeleteFileAsync(domain.HostPath(fleece))));
                undo.Push(($"dismiss job {job}", () => qmp.DismissJobAsync(job, _options.CommandTimeout, _time, CancellationToken.None)));
                await qmp.CreateImageAsync(job, new JsonObject
                {
                    ["driver"] = "file",
                    ["filename"] = fleece,
                    ["size"] = disk.Node.VirtualSize,
                }, _options.CommandTimeout, cancellationToken);
                cancellationToken.ThrowIfCancellationRequested();
                await qmp.BlockdevAddAsync(new JsonObject
                {
                    ["driver"] = "raw",
                    ["node-name"] = CaptureNames.Fleece(id, disk.Index),
                    ["discard"] = "unmap",
                    ["file"] = new JsonObject { ["driver"] = "file", ["filename"] = fleece, ["discard"] = "unmap" },
                }, CancellationToken.None);
                var fleeceNode = CaptureNames.Fleece(id, disk.Index);
                undo.Push(($"delete node {fleeceNode}", () => qmp.BlockdevDelAsync(fleeceNode, CancellationToken.None)));
            }

            // The new checkpoint starts recording before the snapshot instant, so no write after it can be missed by the
            // next incremental (writes between the two are read again then: a superset, never a subset).
            var checkpointDisks = plan.Where(d => d.InNewCheckpoint).ToList();
            if (request.NewCheckpoint is { } checkpoint && checkpointDisks.Count > 0)
            {
                step = $"creating checkpoint '{checkpoint}'";
                cancellationToken.ThrowIfCancellationRequested();
                await qmp.TransactionAsync(checkpointDisks.Select(d => ("block-dirty-bitmap-add", QmpCommands.BitmapAdd(d.Node.NodeName, checkpoint, persistent: true))), CancellationToken.None);
                undo.Push(($"remove checkpoint '{checkpoint}'", async () =>
                {
                    foreach (var disk in checkpointDisks)
                    {
                        await qmp.RemoveBitmapAsync(disk.Node.NodeName, checkpoint, CancellationToken.None);
                    }
                }));
            }

            foreach (var disk in plan)
            {
                step = $"adding the snapshot filter of disk '{disk.Options.Target}'";
                var filter = CaptureNames.Filter(id, disk.Index);
                var filterOptions = new JsonObject
                {
                    ["driver"] = "copy-before-write",
                    ["node-name"] = filter,
                    ["file"] = disk.Node.NodeName,
                    ["target"] = CaptureNames.Fleece(id, disk.Index),
                    ["on-cbw-error"] = "break-snapshot",
                    ["cbw-timeout"] = (long)Math.Max(1, Math.Ceiling(_options.CbwTimeout.TotalSeconds)),
                };
                if (disk.Options.Discard)
                {
                    filterOptions["discard"] = "unmap";
                }

                cancellationToken.ThrowIfCancellationRequested();
                await qmp.BlockdevAddAsync(filterOptions, CancellationToken.None);
                undo.Push(($"delete node {filter}", () => qmp.BlockdevDelAsync(filter, CancellationToken.None)));
            }

            // The instant: every front node moves onto its filter in one atomic reopen.
            step = "moving the front nodes onto the snapshot filters";
            cancellationToken.ThrowIfCancellationRequested();
            await qmp.BlockdevReopenAsync(plan.Select(d => FrontOptions(d.Options, CaptureNames.Filter(id, d.Index))), CancellationToken.None);
            capturedAt = _time.GetUtcNow();
            undo.Push(("move the front nodes back", () => qmp.BlockdevReopenAsync(plan.Select(d => FrontOptions(d.Options, d.Node.NodeName)), CancellationToken.None)));

            // Frozen copies of the base bitmaps, taken after the instant: they cover every write up to it (and maybe a
            // few after, which the snapshot does not show anyway).
            var incremental = plan.Where(d => d.BaseBitmap is not null).ToList();
            if (incremental.Count > 0)
            {
                step = "freezing the changed-block bitmaps";
                var actions = new List<(string, JsonObject)>();
                foreach (var disk in incremental)
                {
                    var temp = CaptureNames.TempBitmap(id, disk.Index);
                    actions.Add(("block-dirty-bitmap-add", QmpCommands.BitmapAdd(disk.Node.NodeName, temp, persistent: false, disabled: true, granularity: disk.BaseBitmap!.Granularity)));
                    actions.Add(("block-dirty-bitmap-merge", QmpCommands.BitmapMerge(disk.Node.NodeName, temp, [disk.BaseBitmap.Name])));
                }

                cancellationToken.ThrowIfCancellationRequested();
                await qmp.TransactionAsync(actions, CancellationToken.None);
                undo.Push(("remove the frozen bitmaps", async () =>
                {
                    foreach (var disk in incremental)
                    {
                        await qmp.RemoveBitmapAsync(disk.Node.NodeName, CaptureNames.TempBitmap(id, disk.Index), CancellationToken.None);
                    }
                }));
            }

            var disks = new List<CaptureDisk>();
            foreach (var disk in plan)
            {
                step = $"exporting the snapshot of disk '{disk.Options.Target}'";
                var snapshot = CaptureNames.Snapshot(id, disk.Index);
                cancellationToken.ThrowIfCancellationRequested();
                await qmp.BlockdevAddAsync(new JsonObject { ["driver"] = "snapshot-access", ["node-name"] = snapshot, ["file"] = CaptureNames.Filter(id, disk.Index) }, CancellationToken.None);
                undo.Push(($"delete node {snapshot}", () => qmp.BlockdevDelAsync(snapshot, CancellationToken.None)));
                var export = CaptureNames.Export(id, disk.Index);
                var temp = disk.BaseBitmap is null ? null : CaptureNames.TempBitmap(id, disk.Index);
                cancellationToken.ThrowIfCancellationRequested();
                await qmp.AddNbdExportAsync(export, snapshot, export, writable: false, temp is null ? null : [(disk.Node.NodeName, temp)], CancellationToken.None);
                undo.Push(($"delete export {export}", () => qmp.DeleteExportAsync(export, _options.CommandTimeout, CancellationToken.None)));
                disks.Add(new CaptureDisk
                {
                    Target = disk.Options.Target,
                    Endpoint = NbdUri.ForUnixSocket(domain.Options.NbdSocketPath, export),
                    VirtualSize = disk.Node.VirtualSize,
                    Identity = IdentityOf(domain, disk.Options, disk.Node.FileName),
                    SinceCheckpoint = temp is null ? null : disk.Since,
                    ChangedBlocksContext = temp is null ? null : NbdContexts.DirtyBitmap(temp),
                    Granularity = disk.BaseBitmap?.Granularity,
                    FullReason = temp is null ? disk.FullReason : null,
                    InNewCheckpoint = disk.InNewCheckpoint,
                });
            }

            var capture = new QemuCapture(id, domain.Id, capturedAt, request.NewCheckpoint,
                [.. plan.Select(d => new QemuCaptureDisk(d.Index, d.Options.Target, CaptureNames.FleeceFile(domain.Options.FleeceDirectory, id, d.Index), d.InNewCheckpoint, d.BaseBitmap is null ? null : CaptureNames.TempBitmap(id, d.Index)))]);
            domain.Captures[id] = capture;
            Log.CaptureStarted(_logger, domain.Id, id, disks.Count, request.NewCheckpoint);
            return new Capture
            {
                Id = id,
                DomainId = domain.Id,
                HostName = HostName,
                CapturedAt = capturedAt,
                NewCheckpoint = request.NewCheckpoint,
                Disks = disks,
            };
        }
        catch (Exception ex)
        {
            Log.CaptureFailed(_logger, domain.Id, id, step, ex);
            await UndoAsync(domain, qmp, id, undo); // a stack enumerates newest first
            if (ex is OperationCanceledException or HypervisorException)
            {
                throw;
            }

            var qmpError = ex as QmpException;
            throw new CaptureFailedException(domain.Id, $"Capture of domain '{domain.Id}' failed while {step}.", null, qmpError?.Description ?? ex.Message, qmpError?.ErrorClass, ex);
        }
    }

    private async Task<bool> ReleaseLockedAsync(QemuDomain domain, string id, CaptureOutcome outcome, CancellationToken cancellationToken)
    {
        // A capture this instance made is undone step by step from what it knows; anything unexpected, or a capture
        // left by another process, is found and removed from the live graph instead.
        if (domain.Captures.GetValueOrDefault(id) is { } made && domain.Qmp is { IsConnected: true } connected
            && await TryReleaseKnownAsync(domain, connected, made, outcome, cancellationToken))
        {
            domain.Captures.TryRemove(id, out _);
            Log.CaptureReleased(_logger, domain.Id, id, outcome);
            await StopOwnNbdServerIfIdleAsync(domain, connected, id);
            return true;
        }

        var released = await ReleaseFoundAsync(domain, id, outcome, cancellationToken);
        if (domain.Qmp is { IsConnected: true } qmp)
        {
            await StopOwnNbdServerIfIdleAsync(domain, qmp, id);
        }

        return released;
    }

    private async Task<bool> TryReleaseKnownAsync(QemuDomain domain, QmpClient qmp, QemuCapture capture, CaptureOutcome outcome, CancellationToken cancellationToken)
    {
        try
        {
            foreach (var disk in capture.Disks)
            {
                await qmp.DeleteExportAsync(CaptureNames.Export(capture.Id, disk.Index), _options.CommandTimeout, cancellationToken);
                await IgnoreMissingAsync(() => qmp.BlockdevDelAsync(CaptureNames.Snapshot(capture.Id, disk.Index), cancellationToken));
            }

            await qmp.BlockdevReopenAsync(capture.Disks.Select(d => FrontOptions(domain.Options.Disks[d.Index], domain.Options.Disks[d.Index].NodeName)), cancellationToken);
            foreach (var disk in capture.Disks)
            {
                var options = domain.Options.Disks[disk.Index];
                await IgnoreMissingAsync(() => qmp.BlockdevDelAsync(CaptureNames.Filter(capture.Id, disk.Index), cancellationToken));
                if (disk.TempBitmap is { } temp)
                {
                    await IgnoreMissingAsync(() => qmp.RemoveBitmapAsync(options.NodeName, temp, cancellationToken));
                }

                await IgnoreMissingAsync(() => qmp.BlockdevDelAsync(CaptureNames.Fleece(capture.Id, disk.Index), cancellationToken));
                if (outcome == CaptureOutcome.Abandoned && disk.InNewCheckpoint && capture.NewCheckpoint is { } checkpoint)
                {
                    await IgnoreMissingAsync(() => qmp.RemoveBitmapAsync(options.NodeName, checkpoint, cancellationToken));
                }

                File.Delete(domain.HostPath(disk.FleecePath));
            }

            File.Delete(CaptureNames.Sidecar(domain.HostPath(domain.Options.FleeceDirectory), capture.Id));
            return true;
        }
        catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException or IOException or UnauthorizedAccessException)
        {
            Log.ReleaseStepFailed(_logger, domain.Id, capture.Id, "release it step by step", ex.Message);
            return false;
        }
    }

    private static async Task IgnoreMissingAsync(Func<Task> action)
    {
        try
        {
            await action();
        }
        catch (QmpException ex) when (ex.Description.Contains("not found", StringComparison.OrdinalIgnoreCase) || ex.Description.StartsWith("Failed to find node", StringComparison.Ordinal))
        {
            // Already gone.
        }
    }

    private async Task<bool> ReleaseFoundAsync(QemuDomain domain, string id, CaptureOutcome outcome, CancellationToken cancellationToken)
    {
        var known = domain.Captures.GetValueOrDefault(id);
        var sidecar = ReadSidecar(domain, id);
        var newCheckpoint = known?.NewCheckpoint ?? sidecar?.NewCheckpoint;
        var failures = new List<string>();
        var released = known is not null;
        var prefix = CaptureNames.Prefix + id + "-";

        async Task Try(string step, Func<Task> action)
        {
            try
            {
                await action();
            }
            catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException or IOException or UnauthorizedAccessException)
            {
                failures.Add($"{step}: {(ex is QmpException q ? q.Description : ex.Message)}");
                Log.ReleaseStepFailed(_logger, domain.Id, id, step, ex.Message);
            }
        }

        var qmp = await TryConnectAsync(domain, cancellationToken);
        if (qmp is not null)
        {
            await Try("delete the exports", async () =>
            {
                foreach (var export in (await qmp.QueryBlockExportsAsync(cancellationToken)).Where(e => e.Id.StartsWith(prefix, StringComparison.Ordinal)))
                {
                    released |= await qmp.DeleteExportAsync(export.Id, _options.CommandTimeout, cancellationToken);
                }
            });

            await Try("dismiss the jobs", async () =>
            {
                foreach (var job in (await qmp.ExecuteAsync("query-jobs", cancellationToken: cancellationToken)).EnumerateArray())
                {
                    if (job.GetProperty("id").GetString() is { } jobId && jobId.StartsWith(prefix, StringComparison.Ordinal))
                    {
                        released |= await qmp.DismissJobAsync(jobId, _options.CommandTimeout, _time, cancellationToken);
                    }
                }
            });

            var nodes = await QueryOrEmptyAsync(qmp, cancellationToken);
            foreach (var snapshot in nodes.Where(n => n.NodeName.StartsWith(prefix, StringComparison.Ordinal) && n.NodeName.EndsWith("-snap", StringComparison.Ordinal)))
            {
                released = true;
                await Try($"delete node {snapshot.NodeName}", () => qmp.BlockdevDelAsync(snapshot.NodeName, cancellationToken));
            }

            var filters = nodes.Where(n => n.NodeName.StartsWith(prefix, StringComparison.Ordinal) && n.NodeName.EndsWith("-cbw", StringComparison.Ordinal)).ToList();
            if (filters.Count > 0)
            {
                released = true;
                await Try("move the front nodes back", async () =>
                {
                    var graph = await qmp.QueryBlockGraphAsync(cancellationToken);
                    var reopen = new List<JsonObject>();
                    foreach (var filter in filters)
                    {
                        var disk = graph.ChildOf(filter.NodeName, "file");
                        foreach (var (parent, edge) in graph.ParentsOf(filter.NodeName))
                        {
                            if (parent.Type == "block-driver" && edge.Name == "file" && disk is not null)
                            {
                                var options = domain.Options.Disks.FirstOrDefault(d => d.FrontNodeName == parent.Name);
                                reopen.Add(FrontOptions(options ?? new QemuDiskOptions { Target = parent.Name, NodeName = disk, FrontNodeName = parent.Name }, disk));
                            }
                        }
                    }

                    if (reopen.Count > 0)
                    {
                        await qmp.BlockdevReopenAsync(reopen, cancellationToken);
                    }
                });
                foreach (var filter in filters)
                {
                    await Try($"delete node {filter.NodeName}", () => qmp.BlockdevDelAsync(filter.NodeName, cancellationToken));
                }
            }

            foreach (var node in nodes)
            {
                foreach (var bitmap in node.Bitmaps.Where(b => CaptureNames.TryParse(b.Name, out var owner, out _) && owner == id))
                {
                    released = true;
                    await Try($"remove bitmap {bitmap.Name} of node {node.NodeName}", () => qmp.RemoveBitmapAsync(node.NodeName, bitmap.Name, cancellationToken));
                }
            }

            foreach (var fleece in nodes.Where(n => n.NodeName.StartsWith(prefix, StringComparison.Ordinal) && n.NodeName.EndsWith("-fl", StringComparison.Ordinal)))
            {
                released = true;
                await Try($"delete node {fleece.NodeName}", () => qmp.BlockdevDelAsync(fleece.NodeName, cancellationToken));
            }

            if (outcome == CaptureOutcome.Abandoned && newCheckpoint is not null)
            {
                foreach (var disk in domain.Options.Disks)
                {
                    if (nodes.FirstOrDefault(n => n.NodeName == disk.NodeName)?.Bitmaps.Any(b => b.Name == newCheckpoint) == true)
                    {
                        await Try($"remove checkpoint '{newCheckpoint}' from disk '{disk.Target}'", () => qmp.RemoveBitmapAsync(disk.NodeName, newCheckpoint, cancellationToken));
                    }
                }
            }
        }

        var directory = domain.HostPath(domain.Options.FleeceDirectory);
        if (Directory.Exists(directory))
        {
            foreach (var file in Directory.EnumerateFiles(directory, CaptureNames.Prefix + id + "*"))
            {
                if (CaptureNames.TryParseFile(Path.GetFileName(file), out var owner) && owner == id)
                {
                    released = true;
                    await Try($"delete {Path.GetFileName(file)}", () => DeleteFileAsync(file));
                }
            }
        }

        domain.Captures.TryRemove(id, out _);
        if (failures.Count > 0)
        {
            throw new HypervisorException($"Capture '{id}' of domain '{domain.Id}' was not fully released: {string.Join("; ", failures)}.", domain.Id);
        }

        if (released)
        {
            Log.CaptureReleased(_logger, domain.Id, id, outcome);
        }

        return released;
    }

    private async Task<IReadOnlyList<string>> FindCaptureIdsAsync(QemuDomain domain, CancellationToken cancellationToken)
    {
        var ids = new SortedSet<string>(domain.Captures.Keys, StringComparer.Ordinal);
        if (await TryConnectAsync(domain, cancellationToken) is { } qmp)
        {
            try
            {
                foreach (var node in await qmp.QueryNamedBlockNodesAsync(cancellationToken))
                {
                    if (CaptureNames.TryParse(node.NodeName, out var id, out _))
                    {
                        ids.Add(id);
                    }

                    foreach (var bitmap in node.Bitmaps)
                    {
                        if (CaptureNames.TryParse(bitmap.Name, out var owner, out _))
                        {
                            ids.Add(owner);
                        }
                    }
                }

                foreach (var export in await qmp.QueryBlockExportsAsync(cancellationToken))
                {
                    if (CaptureNames.TryParse(export.Id, out var id, out _))
                    {
                        ids.Add(id);
                    }
                }
            }
            catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
            {
                throw Translate(ex, domain.Id, "list captures");
            }
        }

        var directory = domain.HostPath(domain.Options.FleeceDirectory);
        if (Directory.Exists(directory))
        {
            foreach (var file in Directory.EnumerateFiles(directory, CaptureNames.Prefix + "*"))
            {
                if (CaptureNames.TryParseFile(Path.GetFileName(file), out var id))
                {
                    ids.Add(id);
                }
            }
        }

        return [.. ids];
    }

    private static async Task<IReadOnlyList<QemuBlockNode>> QueryOrEmptyAsync(QmpClient qmp, CancellationToken cancellationToken)
    {
        try
        {
            return await qmp.QueryNamedBlockNodesAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
        {
            return [];
        }
    }

    private static JsonObject FrontOptions(QemuDiskOptions disk, string file)
    {
        var options = new JsonObject { ["driver"] = "raw", ["node-name"] = disk.FrontNodeName, ["file"] = file };
        if (disk.Discard)
        {
            options["discard"] = "unmap";
        }

        return options;
    }

    private static Task DeleteFileAsync(string path)
    {
        File.Delete(path);
        return Task.CompletedTask;
    }

    private static async Task WriteSidecarAsync(string path, QemuDomain domain, string id, string? newCheckpoint, List<DiskPlan> plan, DateTimeOffset capturedAt, CancellationToken cancellationToken)
    {
        var record = new JsonObject
        {
            ["id"] = id,
            ["domain"] = domain.Id,
            ["newCheckpoint"] = newCheckpoint,
            ["capturedAt"] = capturedAt.ToString("O", CultureInfo.InvariantCulture),
            ["targets"] = new JsonArray([.. plan.Select(d => JsonValue.Create(d.Options.Target))]),
        };
        await File.WriteAllTextAsync(path, record.ToJsonString(), cancellationToken);
    }

    private static SidecarRecord? ReadSidecar(QemuDomain domain, string id)
    {
        try
        {
            var path = CaptureNames.Sidecar(domain.HostPath(domain.Options.FleeceDirectory), id);
            if (!File.Exists(path))
            {
                return null;
            }

            var node = JsonNode.Parse(File.ReadAllText(path));
            return new SidecarRecord(
                node?["newCheckpoint"]?.GetValue<string>(),
                node?["targets"]?.AsArray().Select(t => t?.GetValue<string>() ?? string.Empty).ToList() ?? [],
                DateTimeOffset.TryParse(node?["capturedAt"]?.GetValue<string>(), CultureInfo.InvariantCulture, DateTimeStyles.None, out var at) ? at : null);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException)
        {
            return null;
        }
    }

    private sealed record SidecarRecord(string? NewCheckpoint, IReadOnlyList<string> Targets, DateTimeOffset? CapturedAt);

    private sealed record DiskPlan(int Index, QemuDiskOptions Options, QemuBlockNode Node, string? Since, QemuBitmap? BaseBitmap, FullReadReason? FullReason, bool InNewCheckpoint);
}
