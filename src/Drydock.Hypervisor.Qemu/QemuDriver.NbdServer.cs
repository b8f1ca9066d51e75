using System.Text.Json;
using System.Text.Json.Nodes;
using Drydock.Hypervisor.Qemu.Qmp;

namespace Drydock.Hypervisor.Qemu;

public sealed partial class QemuDriver
{
    /// <summary>
    /// Makes sure the instance serves NBD on the configured socket. A server this call starts is recorded in the fleece
    /// directory (<see cref="CaptureNames.NbdServerRecord"/>) and stopped again once no NBD export remains
    /// (<see cref="StopOwnNbdServerIfIdleAsync"/>); a server found running is never stopped.
    /// </summary>
    private async Task EnsureNbdServerAsync(QemuDomain domain, QmpClient qmp, CancellationToken cancellationToken)
    {
        if (ReferenceEquals(domain.NbdServerCheckedOn, qmp))
        {
            return;
        }

        if (await qmp.StartNbdServerAsync(domain.Options.NbdSocketPath, cancellationToken))
        {
            try
            {
                var directory = domain.HostPath(domain.Options.FleeceDirectory);
                Directory.CreateDirectory(directory);
                var record = new JsonObject
                {
                    ["socket"] = domain.Options.NbdSocketPath,
                    ["identity"] = DiskIdentity.Of(domain.HostPath(domain.Options.NbdSocketPath)),
                };
                await File.WriteAllTextAsync(CaptureNames.NbdServerRecord(directory), record.ToJsonString(), CancellationToken.None);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Without the record a later process could not tell this server from the operator's: do not keep it.
                await qmp.StopNbdServerAsync(CancellationToken.None);
                throw new HypervisorException($"Could not record the NBD server started on domain '{domain.Id}' in {domain.Options.FleeceDirectory}: {ex.Message}", domain.Id, innerException: ex);
            }

            Log.NbdServer(_logger, domain.Id, "started", domain.Options.NbdSocketPath);
        }
        else if (!File.Exists(domain.HostPath(domain.Options.NbdSocketPath)))
        {
            // QEMU 7.2 cannot say where a running NBD server listens: at least the configured socket must exist.
            throw new HypervisorException(
                $"Domain '{domain.Id}' already runs an NBD server, not on {domain.Options.NbdSocketPath}: configure the socket it listens on (QemuDomainOptions.NbdSocketPath, or nbd= in a qemu: address).", domain.Id);
        }

        domain.NbdServerCheckedOn = qmp;
    }

    /// <summary>
    /// Stops the NBD server Drydock started on the instance (this process or a dead one: the record says so) once it
    /// serves no NBD export any more; best effort (a failure is logged, never thrown: it runs on release and failure
    /// paths). The record is trusted only while the socket file is the one the server created: an instance started again,
    /// or a server the operator started on the same path since, is left alone.
    /// </summary>
    private async Task StopOwnNbdServerIfIdleAsync(QemuDomain domain, QmpClient qmp, string jobId)
    {
        var path = CaptureNames.NbdServerRecord(domain.HostPath(domain.Options.FleeceDirectory));
        try
        {
            if (!File.Exists(path))
            {
                return;
            }

            var record = JsonNode.Parse(await File.ReadAllTextAsync(path, CancellationToken.None));
            var identity = record?["identity"]?.GetValue<string>();
            var socket = record?["socket"]?.GetValue<string>();
            if (identity is null || socket != domain.Options.NbdSocketPath || DiskIdentity.Of(domain.HostPath(socket)) != identity)
            {
                File.Delete(path); // That server is gone (the instance ended or its socket was replaced): nothing of ours runs.
                return;
            }

            if ((await qmp.QueryBlockExportsAsync(CancellationToken.None)).Any(e => e.Type == "nbd"))
            {
                return; // nbd-server-stop would close them too.
            }

            await qmp.StopNbdServerAsync(CancellationToken.None);
            domain.NbdServerCheckedOn = null;
            File.Delete(path);
            Log.NbdServer(_logger, domain.Id, "stopped", socket);
        }
        catch (Exception ex) when (ex is QmpException or QmpConnectionException or TimeoutException or IOException or UnauthorizedAccessException or JsonException or InvalidOperationException)
        {
            Log.ReleaseStepFailed(_logger, domain.Id, jobId, "stop the NBD server it started", ex.Message);
        }
    }
}
