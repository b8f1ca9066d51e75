using System.Diagnostics;
using System.Text.Json.Nodes;
using Drydock.Hypervisor.Qemu.Interop;
using Drydock.Hypervisor.Qemu.Qmp;
using Drydock.Nbd;

namespace Drydock.Hypervisor.Qemu;

public sealed partial class QemuDriver
{
    /// <inheritdoc/>
    public async Task<RestoreExport> OpenRestoreExportAsync(string domainId, IReadOnlyList<string>? targets = null, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var disks = SelectDisks(domain, targets);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            var qmp = await ConnectOrThrowAsync(domain, "open a restore export", cancellationToken);
            var id = CaptureNames.NewId();
            var added = new List<string>();
            var placeholders = new List<(QemuDiskOptions Disk, string Node)>();
            var moved = false;
            try
            {
                var (state, detail) = await StateWithDetailAsync(domain, qmp, cancellationToken);
                if (state == DomainState.Running)
                {
                    throw new DomainStateException(domainId, DomainState.Running, "open a restore export", detail);
                }

                if (domain.Captures.Keys.FirstOrDefault() is { } capture)
                {
                    throw new DomainBusyException(domainId, capture);
                }

                // A paused virtual machine's device keeps write permission on its front node and shares it with no one,
                // so a writable export of that chain is refused by QEMU. The guest is paused (QEMU drained its requests):
                // its front node rests on a placeholder meanwhile, and the format node below is exported.
                var nodes = await qmp.QueryNamedBlockNodesAsync(cancellationToken);
                var graph = await qmp.QueryBlockGraphAsync(cancellationToken);
                var held = disks.Where(d => graph.ParentsOf(d.FrontNodeName).Any(p => p.Edge.Writes)).ToList();
                var other = held.SelectMany(d => graph.ParentsOf(d.FrontNodeName).Where(p => p.Edge.Writes && !IsDevice(p.Parent)).Select(p => (d, p.Parent))).FirstOrDefault();
                if (other.d is not null)
                {
                    // Only a paused guest device can be set aside safely; another writer (an export) would lose its writes.
                    throw new DomainStateException(domainId, state, "open a restore export",
                        $"{QemuBlockGraph.Describe(other.Parent)} writes to disk '{other.d.Target}' (front node '{other.d.FrontNodeName}'): remove it first");
                }

                foreach (var disk in held)
                {
                    var placeholder = CaptureNames.RestorePlaceholder(id, domain.IndexOf(disk.Target));
                    await qmp.BlockdevAddAsync(new JsonObject
                    {
                        ["driver"] = "null-co",
                        ["node-name"] = placeholder,
                        ["size"] = Node(nodes, disk)?.VirtualSize ?? 0,
                        ["read-zeroes"] = true,
                    }, CancellationToken.None);
                    placeholders.Add((disk, placeholder));
                }

                if (placeholders.Count > 0)
                {
                    await qmp.BlockdevReopenAsync(placeholders.Select(p => FrontOptions(p.Disk, p.Node)), CancellationToken.None);
                    moved = true;
                }

                await EnsureNbdServerAsync(domain, qmp, cancellationToken);
                var exported = new List<RestoreExportDisk>();
                foreach (var disk in disks)
                {
                    var export = CaptureNames.RestoreExport(id, domain.IndexOf(disk.Target));
                    var node = held.Contains(disk) ? disk.NodeName : disk.FrontNodeName;
                    await qmp.AddNbdExportAsync(export, node, export, writable: true, cancellationToken: CancellationToken.None);
                    added.Add(export);
                    exported.Add(new RestoreExportDisk(disk.Target, NbdUri.ForUnixSocket(domain.Options.NbdSocketPath, export), Node(nodes, disk)?.VirtualSize ?? 0));
                }

                Log.RestoreExportOpened(_logger, domainId, id, exported.Count);
                return new RestoreExport { Id = id, DomainId = domainId, Disks = exported };
            }
            catch (Exception ex)
            {
                await UndoRestoreExportAsync(domain, qmp, id, added, moved ? placeholders : [], [.. placeholders.Select(p => p.Node)]);
                if (ex is QmpException or QmpConnectionException or TimeoutException)
                {
                    throw Translate(ex, domainId, "open a restore export");
                }

                throw;
            }
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<bool> CloseRestoreExportAsync(string domainId, string exportId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            if (await TryConnectAsync(domain, cancellationToken) is not { } qmp)
            {
                return false;
            }

            var prefix = CaptureNames.RestorePrefix + exportId + "-";
            try
            {
                var closed = false;
                foreach (var export in (await qmp.QueryBlockExportsAsync(cancellationToken)).Where(e => e.Id.StartsWith(prefix, StringComparison.Ordinal)))
                {
                    closed |= await qmp.DeleteExportAsync(export.Id, _options.CommandTimeout, cancellationToken);
                }

                // Front nodes resting on this export's placeholders go back onto their format nodes, all at once.
                var graph = await qmp.QueryBlockGraphAsync(cancellationToken);
                var back = domain.Options.Disks.Where(d => graph.ChildOf(d.FrontNodeName, "file")?.StartsWith(prefix, StringComparison.Ordinal) == true).ToList();
                if (back.Count > 0)
                {
                    await qmp.BlockdevReopenAsync(back.Select(d => FrontOptions(d, d.NodeName)), cancellationToken);
                    closed = true;
                }

                foreach (var node in (await qmp.QueryNamedBlockNodesAsync(cancellationToken)).Where(n => n.NodeName.StartsWith(prefix, StringComparison.Ordinal)))
                {
                    await IgnoreMissingAsync(() => qmp.BlockdevDelAsync(node.NodeName, cancellationToken));
                }

                await StopOwnNbdServerIfIdleAsync(domain, qmp, exportId);
                return closed;
            }
            catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
            {
                throw Translate(ex, domainId, "close a restore export");
            }
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <summary>A guest device's block backend (named), as opposed to an export's (unnamed in QEMU 7.2's graph).</summary>
    private static bool IsDevice(QemuGraphNode parent) => parent.Type == "block-backend" && parent.Name.Length > 0;

    /// <summary>Undoes a restore export that failed half-way: its exports, the front nodes' move, the placeholders, the NBD server.</summary>
    private async Task UndoRestoreExportAsync(QemuDomain domain, QmpClient qmp, string id, List<string> exports, List<(QemuDiskOptions Disk, string Node)> moved, List<string> placeholders)
    {
        var steps = new List<(string Step, Func<Task> Action)>();
        steps.AddRange(exports.Select(e => ($"delete export {e}", (Func<Task>)(() => qmp.DeleteExportAsync(e, _options.CommandTimeout, CancellationToken.None)))));
        if (moved.Count > 0)
        {
            steps.Add(("move the front nodes back", () => qmp.BlockdevReopenAsync(moved.Select(p => FrontOptions(p.Disk, p.Disk.NodeName)), CancellationToken.None)));
        }

        steps.AddRange(placeholders.Select(p => ($"delete node {p}", (Func<Task>)(() => qmp.BlockdevDelAsync(p, CancellationToken.None)))));
        await UndoAsync(domain, qmp, id, steps);
    }

    /// <summary>Runs the undo steps of a half-made capture or restore export in the order given, each best effort (a
    /// failure is logged and the next step runs), then stops the NBD server Drydock started if nothing uses it now.</summary>
    private async Task UndoAsync(QemuDomain domain, QmpClient qmp, string id, IEnumerable<(string Step, Func<Task> Action)> steps)
    {
        foreach (var (step, action) in steps)
        {
            try
            {
                await action();
            }
            catch (Exception undo) when (undo is QmpException or QmpConnectionException or TimeoutException or IOException or UnauthorizedAccessException)
            {
                Log.ReleaseStepFailed(_logger, domain.Id, id, step, undo.Message);
            }
        }

        await StopOwnNbdServerIfIdleAsync(domain, qmp, id);
    }

    /// <inheritdoc/>
    public async Task StartAsync(string domainId, bool paused = false, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        var launch = domain.Options.Launch
            ?? throw new HypervisorNotSupportedException("starting an instance it did not launch (no Launch options)", DriverName, domainId);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            if (await TryConnectAsync(domain, cancellationToken) is not null)
            {
                throw new DomainStateException(domainId, DomainState.Running, "start the domain");
            }

            var pidFile = PidFileOf(domain);
            var start = new ProcessStartInfo(launch.Executable)
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            foreach (var argument in LaunchArguments(domain, pidFile))
            {
                start.ArgumentList.Add(argument);
            }

            foreach (var argument in launch.ExtraArguments)
            {
                start.ArgumentList.Add(argument);
            }

            Directory.CreateDirectory(domain.Options.FleeceDirectory);
            using (var process = Process.Start(start) ?? throw new HypervisorException($"Could not start {launch.Executable} for domain '{domainId}'.", domainId))
            {
                // --daemonize: the first process exits once the daemon is ready (or failed, with its reason on stderr).
                var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
                var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
                using var timeout = new CancellationTokenSource(_options.LaunchTimeout, _time);
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
                try
                {
                    await process.WaitForExitAsync(linked.Token);
                }
                catch (OperationCanceledException) when (timeout.IsCancellationRequested)
                {
                    process.Kill(entireProcessTree: true);
                    throw new HypervisorException($"{launch.Executable} for domain '{domainId}' did not become ready within {_options.LaunchTimeout.TotalSeconds:0} s.", domainId);
                }

                var error = (await stderr).Trim();
                _ = await stdout;
                if (process.ExitCode != 0)
                {
                    throw new HypervisorException($"{launch.Executable} for domain '{domainId}' failed to start (exit code {process.ExitCode}).", domainId, error.Length > 0 ? error : null);
                }
            }

            var qmp = await TryConnectAsync(domain, cancellationToken)
                ?? throw new HypervisorConnectionException($"Domain '{domainId}' started but its QMP monitor {domain.Options.QmpSocketPath} does not answer.", domainId);
            Log.Lifecycle(_logger, domainId, paused ? "started paused" : "started");
            Publish(domain, DomainEventKind.Started, paused ? "paused" : null);
            if (!paused)
            {
                await AddGuestExportsAsync(domain, qmp, cancellationToken);
            }
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task ResumeAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            var qmp = await ConnectOrThrowAsync(domain, "resume the domain", cancellationToken);
            try
            {
                await qmp.ExecuteAsync("cont", cancellationToken: cancellationToken);
                return; // A virtual machine: QEMU reports RESUME itself.
            }
            catch (QmpException ex) when (ex.ErrorClass == "CommandNotFound")
            {
                // qemu-storage-daemon: "running" means the guest exports are up.
            }
            catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
            {
                throw Translate(ex, domainId, "resume the domain");
            }

            if (domain.Options.Launch is null)
            {
                throw new HypervisorNotSupportedException("resuming a qemu-storage-daemon it did not launch", DriverName, domainId);
            }

            await AddGuestExportsAsync(domain, qmp, cancellationToken);
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task DestroyAsync(string domainId, CancellationToken cancellationToken = default)
    {
        var domain = Find(domainId);
        await domain.Lock.WaitAsync(cancellationToken);
        try
        {
            var qmp = await TryConnectAsync(domain, cancellationToken);
            var pid = domain.LivePid();
            if (pid is null)
            {
                if (qmp is null)
                {
                    return; // Already stopped.
                }

                throw new HypervisorNotSupportedException("destroying an instance whose pid it does not know (set PidFile)", DriverName, domainId);
            }

            // Like libvirt's destroy: SIGTERM (the daemon closes its images cleanly, storing the bitmaps), and SIGKILL
            // after the grace period.
            domain.DestroyRequested = true;
            if (NativeMethods.Kill(pid.Value, NativeMethods.SigTerm) != 0)
            {
                domain.DestroyRequested = false;
                throw new HypervisorException($"Could not signal process {pid} of domain '{domainId}' (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()}).", domainId);
            }

            if (!await WaitForExitAsync(pid.Value, _options.DestroyGracePeriod, cancellationToken))
            {
                NativeMethods.Kill(pid.Value, NativeMethods.SigKill);
                if (!await WaitForExitAsync(pid.Value, _options.LaunchTimeout, cancellationToken))
                {
                    throw new HypervisorException($"Process {pid} of domain '{domainId}' did not end after SIGKILL.", domainId);
                }
            }

            if (qmp is not null)
            {
                await qmp.Closed.WaitAsync(_options.LaunchTimeout, _time, cancellationToken);
            }
            else
            {
                domain.DestroyRequested = false;
                Publish(domain, DomainEventKind.Stopped, "destroyed");
            }

            File.Delete(PidFileOf(domain)); // in case it had to be killed
            Log.Lifecycle(_logger, domainId, "destroyed");
        }
        finally
        {
            domain.Lock.Release();
        }
    }

    private async Task<bool> WaitForExitAsync(int pid, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = _time.GetUtcNow() + timeout;
        while (NativeMethods.Kill(pid, 0) == 0 && !IsZombie(pid))
        {
            if (_time.GetUtcNow() > deadline)
            {
                return false;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), _time, cancellationToken);
        }

        return true;
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] == 'Z';
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    private async Task AddGuestExportsAsync(QemuDomain domain, QmpClient qmp, CancellationToken cancellationToken)
    {
        try
        {
            await EnsureNbdServerAsync(domain, qmp, cancellationToken);
            var exports = await qmp.QueryBlockExportsAsync(cancellationToken);
            foreach (var disk in domain.Options.Disks.Where(d => d.GuestExportName is not null))
            {
                var id = CaptureNames.GuestExport(disk.Target);
                if (!exports.Any(e => e.Id == id))
                {
                    await qmp.AddNbdExportAsync(id, disk.FrontNodeName, disk.GuestExportName!, writable: true, cancellationToken: cancellationToken);
                }
            }
        }
        catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException)
        {
            throw Translate(ex, domain.Id, "start the guest exports");
        }

        Publish(domain, DomainEventKind.Resumed, "guest exports up");
    }

    private static string PidFileOf(QemuDomain domain) => domain.PidFile ?? domain.Options.QmpSocketPath + ".pid";

    private static IEnumerable<string> LaunchArguments(QemuDomain domain, string pidFile)
    {
        yield return "--chardev";
        yield return $"socket,id=ddqmp,path={Escape(domain.Options.QmpSocketPath)},server=on,wait=off";
        yield return "--monitor";
        yield return "chardev=ddqmp";
        yield return "--pidfile";
        yield return pidFile;
        yield return "--daemonize";
        yield return "--nbd-server";
        yield return $"addr.type=unix,addr.path={Escape(domain.Options.NbdSocketPath)}";
        foreach (var disk in domain.Options.Disks)
        {
            var discard = disk.Discard ? ",discard=unmap" : string.Empty;
            yield return "--blockdev";
            yield return $"driver=file,node-name={disk.NodeName}-file,filename={Escape(disk.ImagePath!)}{discard}";
            yield return "--blockdev";
            yield return $"driver={disk.Format},node-name={disk.NodeName},file={disk.NodeName}-file{discard}";
            yield return "--blockdev";
            yield return $"driver=raw,node-name={disk.FrontNodeName},file={disk.NodeName}{discard}";
        }
    }

    /// <summary>QEMU's option syntax doubles commas inside values.</summary>
    private static string Escape(string value) => value.Replace(",", ",,", StringComparison.Ordinal);
}
