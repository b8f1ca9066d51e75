using Drydock.Hypervisor.Libvirt.Xml;
using Xunit;

namespace Drydock.Hypervisor.Tests.Libvirt;

public sealed class DomainXmlTests
{
    // A live domain XML of libvirt 9.0 (shortened): blockdev source indexes, a CD-ROM, a raw disk and a network disk.
    private const string Live = """
        <domain type='qemu' id='5'>
          <name>web-1</name>
          <uuid>6f1d2c1e-93b5-4c55-a0a4-5d1f3c0c9e11</uuid>
          <devices>
            <disk type='file' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source file='/var/lib/libvirt/images/web-1.qcow2' index='2'/>
              <backingStore/>
              <target dev='vda' bus='virtio'/>
              <alias name='virtio-disk0'/>
            </disk>
            <disk type='file' device='cdrom'>
              <driver name='qemu' type='raw'/>
              <target dev='sda' bus='sata'/>
              <readonly/>
            </disk>
            <disk type='block' device='disk'>
              <driver name='qemu' type='raw'/>
              <source dev='/dev/vg0/data' index='1'/>
              <target dev='vdb' bus='virtio'/>
              <readonly/>
            </disk>
            <disk type='network' device='disk'>
              <driver name='qemu' type='raw'/>
              <source protocol='rbd' name='pool/image'/>
              <target dev='vdc' bus='virtio'/>
            </disk>
          </devices>
        </domain>
        """;

    [Fact]
    public void Reads_disks_with_sources_formats_and_qemu_node_names_skipping_cdroms()
    {
        var domain = DomainXml.Parse(Live);

        Assert.Equal("6f1d2c1e-93b5-4c55-a0a4-5d1f3c0c9e11", domain.Uuid);
        Assert.Equal(["vda", "vdb", "vdc"], domain.Disks.Select(d => d.Target));
        var vda = domain.FindDisk("vda")!;
        Assert.Equal("/var/lib/libvirt/images/web-1.qcow2", vda.Source);
        Assert.Equal("libvirt-2-format", vda.FormatNodeName);
        Assert.True(vda.SupportsCheckpoints);
        Assert.Equal("virtio-disk0", vda.Alias);
        Assert.True(domain.FindDisk("vdb")!.ReadOnly);
        Assert.False(domain.FindDisk("vdb")!.SupportsCheckpoints);
        Assert.Equal("rbd:pool/image", domain.FindDisk("vdc")!.Source);
        Assert.Null(domain.FindDisk("vdc")!.FormatNodeName);
    }

    [Fact]
    public void A_disk_without_target_is_a_format_error() =>
        Assert.Throws<FormatException>(() => DomainXml.Parse("<domain><name>x</name><uuid>u</uuid><devices><disk type='file' device='disk'/></devices></domain>"));
}
