using Drydock.Hypervisor.Libvirt.Xml;
using Xunit;

namespace Drydock.Hypervisor.Tests.Libvirt;

public sealed class QemuBitmapsTests
{
    [Fact]
    public void Reads_bitmaps_per_node_from_query_named_block_nodes_including_inconsistent_ones()
    {
        // As virDomainQemuMonitorCommand returned it on QEMU 7.2 (fields trimmed), after a kill for the second bitmap.
        const string Reply = """
            {"return":[
              {"node-name":"libvirt-2-format","drv":"qcow2","dirty-bitmaps":[
                 {"name":"drydock-cp1","recording":true,"persistent":true,"busy":false,"granularity":65536,"count":131072},
                 {"name":"drydock-cp0","recording":false,"persistent":true,"busy":false,"inconsistent":true,"granularity":65536,"count":0}]},
              {"node-name":"libvirt-2-storage","drv":"file"}],"id":"libvirt-427"}
            """;

        var nodes = QemuBitmaps.ParseNamedBlockNodes(Reply);

        Assert.Empty(nodes["libvirt-2-storage"]);
        var bitmaps = nodes["libvirt-2-format"];
        Assert.Equal(new QemuBitmap("drydock-cp1", true, false, true, false, 65536, 131072), bitmaps[0]);
        Assert.True(bitmaps[1].Inconsistent);
    }

    [Fact]
    public void A_qmp_error_reply_is_a_format_error() =>
        Assert.Throws<FormatException>(() => QemuBitmaps.ParseNamedBlockNodes("""{"id":"x","error":{"class":"GenericError","desc":"no"}}"""));

    [Fact]
    public void Reads_in_use_bitmaps_of_a_closed_image_as_inconsistent()
    {
        // qemu-img info --output=json after QEMU was killed: the bitmap is still flagged in-use in the file.
        const string Info = """
            {"virtual-size":67108864,"format":"qcow2","format-specific":{"type":"qcow2","data":{"bitmaps":[
              {"flags":["in-use","auto"],"name":"drydock-x2","granularity":65536},
              {"flags":["auto"],"name":"drydock-x3","granularity":131072}]}}}
            """;

        var bitmaps = QemuBitmaps.ParseImageInfo(Info);

        Assert.True(bitmaps[0].Inconsistent);
        Assert.True(bitmaps[0].Recording);
        Assert.False(bitmaps[1].Inconsistent);
        Assert.Equal(131072, bitmaps[1].Granularity);
        Assert.Empty(QemuBitmaps.ParseImageInfo("""{"format":"raw"}"""));
    }
}
